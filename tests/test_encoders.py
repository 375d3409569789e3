"""smap.encoders: tiny transformers encoders built from configs, and the embedded CTranslate2 Whisper."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from smap.encoders import EncoderError, load_encoder, parse_spec
from smap.encoders.whisper import FRAME_RATE, WINDOW_SAMPLES, encoder_frames, log_mel


def _waves(seconds=(1.0, 1.7, 0.6), seed=0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [0.1 * torch.randn(int(s * 16000), generator=g) for s in seconds]


@pytest.fixture(scope="module")
def tiny_seamless(tmp_path_factory):
    """A SeamlessM4T-v2 speech-to-text model, saved in several safetensors shards."""
    from transformers import SeamlessM4Tv2Config, SeamlessM4Tv2ForSpeechToText

    config = SeamlessM4Tv2Config(
        vocab_size=64, t2u_vocab_size=32, char_vocab_size=32, hidden_size=32, speech_encoder_layers=3,
        speech_encoder_attention_heads=2, speech_encoder_intermediate_size=64, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        t2u_encoder_layers=1, t2u_decoder_layers=1, t2u_encoder_attention_heads=2, t2u_decoder_attention_heads=2,
        t2u_encoder_ffn_dim=32, t2u_decoder_ffn_dim=32, unit_hifi_gan_vocab_size=16, upsample_initial_channel=8,
        unit_embed_dim=8, spkr_embed_dim=8, lang_embed_dim=8, num_adapter_layers=1, adaptor_kernel_size=8,
        adaptor_stride=8)
    torch.manual_seed(0)
    model = SeamlessM4Tv2ForSpeechToText(config).eval()
    folder = tmp_path_factory.mktemp("tiny-seamless")
    model.save_pretrained(folder, max_shard_size="100KB")
    return folder, model


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    config = WhisperConfig(vocab_size=64, d_model=16, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_target_positions=16,
                           decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("tiny-whisper")
    model.save_pretrained(folder)
    return folder, model


def save_tiny_ssl(folder, arch: str = "hubert"):
    """A HuBERT or wav2vec 2.0 with the real front end's strides (320x: 50 frames/s) but tiny widths."""
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model

    common = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32,
                  conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    torch.manual_seed(0)
    model = HubertModel(HubertConfig(**common)) if arch == "hubert" else Wav2Vec2Model(Wav2Vec2Config(**common))
    model.eval().save_pretrained(folder)
    return model


def test_log_mel_matches_whisper_feature_extractor():
    from transformers import WhisperFeatureExtractor

    wav = _waves((2.3,))[0]
    ours = log_mel(wav[None])[0].numpy()
    ref = WhisperFeatureExtractor(feature_size=80)(wav.numpy(), sampling_rate=16000, padding="longest",
                                                   return_tensors="np")["input_features"][0]
    assert ours.shape == ref.shape == (80, wav.numel() // 160)
    assert np.abs(ours - ref).max() < 1e-4


def test_seamless_adaptor_output_equals_the_model_speech_encoder(tiny_seamless):
    folder, model = tiny_seamless
    assert json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"]  # really sharded
    enc = load_encoder(str(folder), device="cpu")  # the reference runs on the CPU: same kernels, exact
    assert enc.name == f"hf:{folder}" and enc.dim == 32
    assert enc.frame_rate == pytest.approx(50 / 8)  # 10 ms fbank frames stacked by 2, adaptor stride 8
    waves = _waves()
    feats = enc.encode(waves)
    from transformers import SeamlessM4TFeatureExtractor

    fe = SeamlessM4TFeatureExtractor()
    for wav, f in zip(waves, feats):
        inputs = fe(wav.numpy(), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad():
            ref = model.speech_encoder(inputs["input_features"], attention_mask=inputs["attention_mask"]).last_hidden_state[0]
        # Batched with longer clips, each clip's output is cut to its own length and matches it alone.
        assert f.shape == ref.shape
        assert torch.allclose(f, ref, atol=1e-4)


def test_seamless_layer_option_gives_50hz_conformer_states(tiny_seamless):
    folder, model = tiny_seamless
    enc = load_encoder(f"hf:{folder}?layer=2", device="cpu")
    assert enc.name == f"hf:{folder}?layer=2" and enc.frame_rate == 50
    waves = _waves()
    feats = enc.encode(waves)
    for wav, f in zip(waves, feats):
        assert abs(f.shape[0] - wav.numel() / 16000 * 50) <= 2
    # Layer 2 of 3: the hooked block's output, as the full model computes it.
    from transformers import SeamlessM4TFeatureExtractor

    inputs = SeamlessM4TFeatureExtractor()(waves[0].numpy(), sampling_rate=16000, return_tensors="pt")
    kept = {}
    hook = model.speech_encoder.encoder.layers[1].register_forward_hook(lambda m, a, out: kept.setdefault("h", out[0] if isinstance(out, tuple) else out))
    with torch.no_grad():
        model.speech_encoder(inputs["input_features"], attention_mask=inputs["attention_mask"])
    hook.remove()
    assert torch.allclose(feats[0], kept["h"][0], atol=1e-4)
    with pytest.raises(EncoderError, match="layer=9 is out of range 1..3"):
        load_encoder(str(folder), layer=9)


def test_whisper_encoder_is_trimmed_to_the_real_length(tiny_whisper):
    folder, model = tiny_whisper
    enc = load_encoder(f"hf:{folder}")
    waves = _waves((1.0, 2.51))
    feats = enc.encode(waves)
    mel = log_mel(torch.nn.functional.pad(waves[1], (0, 480000 - waves[1].numel()))[None])
    with torch.no_grad():
        ref = model.model.encoder(mel).last_hidden_state[0]
    assert [f.shape for f in feats] == [(50, 16), (encoder_frames(waves[1].numel()), 16)]
    assert feats[1].shape[0] == 126  # 2.51 s: 251 mel frames, halved and rounded up
    assert torch.allclose(feats[1], ref[:126], atol=1e-4)
    # Over the 30 s window: each window encoded as a clip of its own, the frames joined.
    (long,) = _waves((31.0,))
    (joined,) = enc.encode([long])
    assert joined.shape == (encoder_frames(long.numel()), 16) == (1550, 16)
    assert torch.equal(joined[:1500], enc.encode([long[:WINDOW_SAMPLES]])[0])
    assert torch.equal(joined[1500:], enc.encode([long[WINDOW_SAMPLES:]])[0])
    assert load_encoder(f"hf:{folder}", layer=1).encode(waves)[0].shape == (50, 16)


@pytest.mark.parametrize("arch", ["hubert", "wav2vec2"])
def test_ssl_encoders_take_a_layer(tmp_path, arch):
    model = save_tiny_ssl(tmp_path, arch)
    waves = _waves((1.0, 0.5))
    last = load_encoder(str(tmp_path))
    assert last.frame_rate == 50 and last.dim == 16
    feats = last.encode(waves)
    assert [f.shape[0] for f in feats] == [49, 24]  # the CNN front end's output lengths
    enc = load_encoder(str(tmp_path), layer=1)
    first = enc.encode(waves[:1])[0]
    with torch.no_grad():
        ref = model(waves[0][None], output_hidden_states=True).hidden_states[1][0]
    values = (waves[0] - waves[0].mean()) / torch.sqrt(waves[0].var() + 1e-7)  # the extractor normalises
    with torch.no_grad():
        ref = model(values[None], output_hidden_states=True).hidden_states[1][0]
    assert torch.allclose(first, ref, atol=1e-3)


def test_specs_and_options_are_checked(tmp_path):
    assert parse_spec("hf:org/model?layer=3&dtype=float16") == ("hf:org/model", {"layer": "3", "dtype": "float16"})
    with pytest.raises(EncoderError, match="not key=value"):
        parse_spec("hf:x?layer")
    with pytest.raises(EncoderError, match="unknown encoder"):
        load_encoder("no-such-encoder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(EncoderError, match="neither a CTranslate2 model.bin nor a transformers config.json"):
        load_encoder(str(tmp_path / "empty"))
    save_tiny_ssl(tmp_path / "ssl")
    with pytest.raises(EncoderError, match="option.s. window do not apply"):
        load_encoder(str(tmp_path / "ssl"), window=True)


@pytest.mark.embedded
def test_embedded_whisper_encodes_synthetic_speech():
    from smap.audio import synthesize

    enc = load_encoder("whisper-tiny.en")
    assert (enc.name, enc.dim, enc.frame_rate) == ("whisper-tiny.en", 384, 50)
    a = synthesize("The children are playing in the garden.", "en-us+m2")
    b = synthesize("Please turn the music down a little.", "en-us+f2")
    feats = enc.encode([a, b])
    assert [f.shape for f in feats] == [(encoder_frames(a.numel()), 384), (encoder_frames(b.numel()), 384)]
    assert all(torch.isfinite(f).all() for f in feats)
    # Padding to the batch's longest clip, not to 30 s, changes a clip's features only a little.
    alone = enc.encode([b])[0]
    windowed = load_encoder("whisper-tiny.en", window=True)
    assert windowed.name == "whisper-tiny.en?window=1"
    full = windowed.encode([b])[0]
    cos = torch.nn.functional.cosine_similarity
    assert cos(alone, feats[1]).mean() > 0.95
    assert cos(alone, full).mean() > 0.8
    # The spec recorded in a store rebuilds the same encoder.
    assert load_encoder(windowed.name).name == windowed.name


def long_speech(seconds: float) -> torch.Tensor:
    """(samples,) synthetic speech at 16 kHz, a sentence said over and over, cut to `seconds`."""
    from smap.audio import synthesize

    one = synthesize("The children are playing in the garden, and the music is far too loud.")
    n = int(seconds * 16000)
    return one.repeat(n // one.numel() + 1)[:n]


@pytest.mark.embedded
def test_embedded_whisper_takes_a_45_s_clip_in_30_s_windows():
    """Whisper's encoder takes 30 s at most: a longer clip is cut into 30 s windows, each encoded
    as a clip of its own and kept for its real length, and the frames joined."""
    clip = long_speech(45.0)
    for window in (False, True):  # --window pads each window to 30 s, as Whisper was trained
        enc = load_encoder("whisper-tiny.en", window=window)
        (feats,) = enc.encode([clip])
        assert feats.shape == (int(45 * FRAME_RATE), 384) == (encoder_frames(clip.numel()), 384)
        assert torch.equal(feats[:1500], enc.encode([clip[:WINDOW_SAMPLES]])[0])
        assert torch.equal(feats[1500:], enc.encode([clip[WINDOW_SAMPLES:]])[0])
    # A last window shorter than one STFT frame (200 samples: one encoder frame) still counts.
    (tail,) = enc.encode([clip[: WINDOW_SAMPLES + 200]])
    assert tail.shape == (encoder_frames(WINDOW_SAMPLES + 200), 384) == (1501, 384)
    assert torch.equal(tail[:1500], feats[:1500])


@pytest.mark.embedded
def test_embedded_whisper_mel_is_what_whisper_reads():
    """Our log-mel of synthetic speech, fed to the same CTranslate2 model's decoder, gives the words."""
    import ctranslate2
    import jiwer
    import tokenizers

    from smap.audio import synthesize
    from smap.encoders import embedded_whisper_dir
    from smap.text import normalize

    folder = embedded_whisper_dir()
    model = ctranslate2.models.Whisper(str(folder), compute_type="int8", intra_threads=2)
    tokenizer = tokenizers.Tokenizer.from_file(str(folder / "tokenizer.json"))
    refs = ["The children are playing in the garden.", "Could you pass me the salt, please?"]
    waves = [synthesize(refs[0], "en-us+m2"), synthesize(refs[1], "en-us+Michael")]
    mel = log_mel(torch.stack([torch.nn.functional.pad(w, (0, 480000 - w.numel())) for w in waves])).numpy()
    results = model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(mel)),
                             [["<|startoftranscript|>", "<|notimestamps|>"]] * 2, max_length=30)
    hyps = [normalize(tokenizer.decode(r.sequences_ids[0])) for r in results]
    assert jiwer.wer([normalize(r) for r in refs], hyps) < 0.2, hyps


def test_a_hub_encoder_is_fetched_at_the_revision_given_and_a_mistyped_path_is_not(tmp_path, monkeypatch):
    import huggingface_hub

    from smap.encoders.hf import model_folder

    calls = []

    def snapshot_download(repo_id, revision=None, **kwargs):
        calls.append((repo_id, revision))
        folder = tmp_path / "snap"
        folder.mkdir(exist_ok=True)
        (folder / "model.safetensors").touch()
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.chdir(tmp_path)
    assert model_folder("someone/encoder@abc123") == tmp_path / "snap"
    assert calls == [("someone/encoder", "abc123")]
    (tmp_path / "data").mkdir()  # data/encoder beside data/: a path mistyped, not a repository
    with pytest.raises(EncoderError, match="no such folder"):
        model_folder("data/encoder")
    assert calls == [("someone/encoder", "abc123")]

    def only_bin(repo_id, revision=None, allow_patterns=(), local_files_only=False):
        # a repository that offers .bin weights alone, not yet in the cache
        if local_files_only:
            raise FileNotFoundError(repo_id)
        folder = tmp_path / "bin-snap"
        folder.mkdir(exist_ok=True)
        if "*.bin" in allow_patterns:
            (folder / "pytorch_model.bin").touch()
        calls.append(allow_patterns)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", only_bin)
    assert model_folder("someone/old-encoder") == tmp_path / "bin-snap"
    assert ["*.safetensors" in p for p in calls[1:]] == [True, False]  # safetensors asked for first


@pytest.mark.parametrize("device, current, index", [("cuda", 1, 1), ("cuda:3", 1, 3), ("cpu", 1, 0)])
def test_a_ct2_whisper_loads_on_this_processs_gpu(monkeypatch, device, current, index):
    """Under `accelerate launch` each process's current GPU is its own: CTranslate2 must be told,
    or every process's Whisper lands on GPU 0."""
    import ctranslate2

    from smap.encoders.whisper import CT2WhisperEncoder

    got = {}

    class FakeWhisper:
        n_mels = 80

        def __init__(self, path, **kwargs):
            got.update(kwargs)

        def encode(self, features, to_cpu):
            return np.zeros((1, 50, 4), np.float32)

    monkeypatch.setattr(ctranslate2.models, "Whisper", FakeWhisper)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)
    enc = CT2WhisperEncoder("/nowhere", "ct2:/nowhere", device=device)
    assert (got["device"], got["device_index"]) == (device.partition(":")[0], index) and enc.dim == 4
