import pytest
import torch

from smap.mapper import MASK_SPAN, MapperConfig, SpeechMapper, length_mask, mask_features, preset, segment_means, utterance_norm


def test_paper_preset_has_the_papers_size():
    model = SpeechMapper(preset("paper", 1024, 4096))
    assert abs(model.num_parameters() - 277e6) / 277e6 < 0.03
    assert model.config.dims == (1024, 2048, 4096) and model.config.n_layers == 6 and model.config.kernel_size == 6


def test_output_is_four_times_shorter_and_lengths_follow():
    cfg = preset("tiny", 16, 24)
    model = SpeechMapper(cfg).eval()
    lengths = torch.tensor([40, 23, 9])
    out, out_len, _ = model(torch.randn(3, 40, 16), lengths)
    assert out.shape == (3, 10, 24)
    assert out_len.tolist() == [10, 5, 2]  # L // 2 // 2
    assert cfg.output_lengths(lengths).tolist() == [10, 5, 2]


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = SpeechMapper(preset("tiny", 16, 24)).eval()
    short = torch.randn(1, 23, 16)
    alone, n_alone, _ = model(short, torch.tensor([23]))
    padded = torch.cat([short, torch.randn(1, 17, 16) * 100], dim=1)  # garbage in the padding
    batch = torch.cat([padded, torch.randn(1, 40, 16)])
    out, n, _ = model(batch, torch.tensor([23, 40]))
    assert n[0] == n_alone[0] == 5
    torch.testing.assert_close(out[0, :5], alone[0, :5], atol=1e-5, rtol=1e-5)


def test_input_pooling_shortens_by_its_factor_and_ignores_padding():
    torch.manual_seed(0)
    cfg = preset("tiny", 16, 24, pool=2)
    model = SpeechMapper(cfg).eval()
    assert cfg.downsampling == 8
    lengths = torch.tensor([40, 23, 9])
    out, out_len, _ = model(torch.randn(3, 40, 16), lengths)
    assert out.shape == (3, 5, 24) and out_len.tolist() == [5, 2, 1] == cfg.output_lengths(lengths).tolist()
    short = torch.randn(1, 23, 16)  # odd: its last frame is a partial window, dropped alone and in a batch
    alone, _, _ = model(short, torch.tensor([23]))
    batch = torch.cat([torch.cat([short, torch.randn(1, 17, 16) * 100], dim=1), torch.randn(1, 40, 16)])
    out, _, _ = model(batch, torch.tensor([23, 40]))
    torch.testing.assert_close(out[0, :2], alone[0, :2], atol=1e-5, rtol=1e-5)
    # pooling by 2 is the mapper without pooling fed the mean of each pair of frames
    plain = SpeechMapper(preset("tiny", 16, 24)).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(1, 40, 16)
    torch.testing.assert_close(model(x, torch.tensor([40]))[0], plain(x.view(1, 20, 2, 16).mean(2), torch.tensor([20]))[0])


def test_save_and_reload_give_identical_outputs(tmp_path):
    model = SpeechMapper(preset("tiny", 16, 24, extra={"llm": "x"})).eval()
    model.save_pretrained(tmp_path / "m")
    again = SpeechMapper.from_pretrained(tmp_path / "m").eval()
    assert again.config == model.config
    x = torch.randn(2, 30, 16)
    assert torch.equal(model(x, torch.tensor([30, 20]))[0], again(x, torch.tensor([30, 20]))[0])
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]


def test_wrong_input_dim_and_bad_config_are_refused(tmp_path):
    model = SpeechMapper(preset("tiny", 16, 24))
    with pytest.raises(ValueError, match="features have dim 8, the mapper expects 16"):
        model(torch.randn(1, 20, 8), torch.tensor([20]))
    with pytest.raises(ValueError, match="not divisible"):
        MapperConfig(dims=(30, 48, 64), n_heads=4)
    with pytest.raises(ValueError, match="unknown mapper preset"):
        preset("huge", 1, 1)
    with pytest.raises(FileNotFoundError, match="config.json"):
        SpeechMapper.from_pretrained(tmp_path)


def test_normalised_mapper_ignores_a_voices_constant_offset_and_scale_and_the_padding():
    torch.manual_seed(0)
    model = SpeechMapper(preset("tiny", 16, 24, normalize=True)).eval()
    x = torch.randn(1, 40, 16)
    shifted = x * (0.5 + torch.rand(16)) + 3 * torch.randn(16)  # another voice: per-channel gain and offset
    out, _, _ = model(x, torch.tensor([40]))
    torch.testing.assert_close(model(shifted, torch.tensor([40]))[0], out, atol=1e-4, rtol=1e-4)
    padded = torch.cat([x[:, :23], torch.randn(1, 17, 16) * 100], dim=1)
    alone = model(x[:, :23], torch.tensor([23]))[0]
    torch.testing.assert_close(model(padded, torch.tensor([23]))[0][:, :5], alone, atol=1e-5, rtol=1e-5)
    y = utterance_norm(padded, torch.tensor([23]))
    assert y[0, 23:].abs().max() == 0 and y[0, :23].mean(0).abs().max() < 1e-5
    without = SpeechMapper(preset("tiny", 16, 24)).eval()
    without.load_state_dict(model.state_dict())
    assert not torch.allclose(without(shifted, torch.tensor([40]))[0], without(x, torch.tensor([40]))[0], atol=1e-2)


def test_feature_masks_cover_their_share_of_real_frames_and_only_in_training():
    torch.manual_seed(0)
    lengths = torch.tensor([4000, 2000])
    masked = mask_features(torch.ones(2, 4000, 32), lengths, time=0.2, channels=0.0)
    frames_zero = (masked == 0).all(-1)
    assert 0.17 < frames_zero[0].float().mean() < 0.23 and 0.17 < frames_zero[1, :2000].float().mean() < 0.23
    assert not frames_zero[1, 2000 + MASK_SPAN:].any()  # no span starts in the padding
    runs = torch.diff(frames_zero[0].int(), prepend=torch.zeros(1, dtype=torch.int)).eq(1).sum()
    assert frames_zero[0].sum() >= MASK_SPAN * runs * 0.5  # spans, not scattered frames
    masked = mask_features(torch.ones(400, 5, 32), torch.full((400,), 5), time=0.0, channels=0.25)
    channel_zero = (masked == 0).all(1)  # (batch, dim): a channel masked in every frame of its utterance
    assert torch.equal(channel_zero, (masked == 0).any(1)) and 0.22 < channel_zero.float().mean() < 0.28
    model = SpeechMapper(preset("tiny", 16, 24, mask_time=0.3, mask_channels=0.3))
    plain = SpeechMapper(preset("tiny", 16, 24)).eval()
    plain.load_state_dict(model.state_dict())
    x = torch.randn(2, 40, 16)
    assert torch.equal(model.eval()(x, torch.tensor([40, 30]))[0], plain(x, torch.tensor([40, 30]))[0])
    assert not torch.equal(model.train()(x, torch.tensor([40, 30]))[0], plain.train()(x, torch.tensor([40, 30]))[0])
    with pytest.raises(ValueError, match="mask_time must be in"):
        preset("tiny", 16, 24, mask_time=1.0)


def test_length_mask():
    assert length_mask(torch.tensor([2, 0, 3]), 3).tolist() == [[True, True, False], [False] * 3, [True] * 3]


def test_segment_means_average_runs_of_one_label_and_drop_blanks():
    x = torch.arange(16.0).view(2, 8, 1)
    labels = torch.tensor([[0, 2, 2, 0, 2, 3, 3, 9],  # the 9 is padding
                           [0, 0, 0, 0, 5, 5, 5, 5]])  # no label before its end: silent
    out, n = segment_means(x, labels, torch.tensor([7, 3]))
    assert n.tolist() == [3, 1]
    # runs: frames 1-2 (label 2), frame 4 (2 again, after a blank: a new token), frames 5-6 (3)
    assert out[0, :, 0].tolist() == [1.5, 4.0, 5.5]
    assert out[1, 0, 0].item() == 9.0  # a silent utterance: one vector, the mean of its frames


def _ctc_mapper(seed=0):
    torch.manual_seed(seed)
    model = SpeechMapper(preset("tiny", 16, 24, compress="ctc", ctc_labels=4))
    model.set_ctc_tokens(torch.tensor([30, 10, 40, 20]))
    return model


def test_ctc_mapper_outputs_one_vector_per_run_of_its_ctc_labels():
    model = _ctc_mapper().eval()
    assert model.config.downsampling == 2 and model.ctc_tokens.tolist() == [10, 20, 30, 40]
    assert model.ctc_targets(torch.tensor([20, 10, 40, 99])).tolist() == [2, 1, 4, 5]  # 5: any other token
    x, lengths = torch.randn(3, 40, 16), torch.tensor([40, 23, 9])
    out, n, ctc = model(x, lengths)
    assert ctc is None  # no tokens given: inference
    h, h_len = model.block1(x, lengths)
    _, runs = segment_means(h, model.ctc_head(h).argmax(-1), h_len)
    assert n.tolist() == runs.tolist() and out.shape[1] == int(runs.max())
    assert (n <= model.config.output_lengths(lengths)).all()  # the bound `count_cut` uses
    # alone or padded in a batch, the same vectors
    alone, n_alone, _ = model(x[1:2, :23], lengths[1:2])
    assert n_alone[0] == n[1]
    torch.testing.assert_close(out[1, : n[1]], alone[0], atol=1e-5, rtol=1e-5)


def test_ctc_loss_trains_the_head_until_there_is_one_vector_per_token():
    model = _ctc_mapper()
    g = torch.Generator().manual_seed(0)
    x, lengths = torch.randn(2, 48, 16, generator=g), torch.tensor([48, 40])
    tokens = [torch.tensor([10, 20, 30, 20]), torch.tensor([40, 99])]
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        _, _, ctc = model(x, lengths, tokens)
        opt.zero_grad()
        ctc.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        _, n, ctc = model(x, lengths, tokens)
        assert float(ctc) < 0.2 and n.tolist() == [4, 2]
        # a row without a transcript (a task example with none) adds nothing to the loss
        _, _, alone = model(x[:1], lengths[:1], tokens[:1])
        _, _, with_empty = model(x, lengths, [tokens[0], torch.tensor([], dtype=torch.long)])
    torch.testing.assert_close(alone, with_empty)


def test_aligned_cut_gives_one_vector_per_transcript_token_whatever_the_head_says():
    model = _ctc_mapper().eval()  # untrained: its greedy runs have nothing to do with the tokens
    x, lengths = torch.randn(3, 40, 16), torch.tensor([40, 23, 9])
    tokens = [torch.tensor([10, 20, 20, 99, 40]), torch.tensor([30, 30]), torch.tensor([], dtype=torch.long)]
    out, n, _ = model(x, lengths, tokens, align=True)
    _, greedy_n, _ = model(x, lengths)
    assert n[:2].tolist() == [5, 2] and n[2] == greedy_n[2]  # no transcript: the greedy cut
    # the aligned rows are the same vectors when the row is alone in its batch
    alone, n_alone, _ = model(x[1:2, :23], lengths[1:2], tokens[1:2], align=True)
    torch.testing.assert_close(out[1, :2], alone[0, : int(n_alone[0])], atol=1e-5, rtol=1e-5)


def test_ctc_mapper_save_and_reload_keep_its_token_labels(tmp_path):
    model = _ctc_mapper().eval()
    model.save_pretrained(tmp_path / "m")
    again = SpeechMapper.from_pretrained(tmp_path / "m").eval()
    assert again.config == model.config and again.ctc_tokens.tolist() == [10, 20, 30, 40]
    x = torch.randn(2, 30, 16)
    assert torch.equal(model(x, torch.tensor([30, 20]))[0], again(x, torch.tensor([30, 20]))[0])


def test_bad_compression_settings_are_refused():
    with pytest.raises(ValueError, match="compress must be one of none, ctc, not 'bpe'"):
        preset("tiny", 16, 24, compress="bpe")
    with pytest.raises(ValueError, match="needs ctc_labels >= 1"):
        preset("tiny", 16, 24, compress="ctc")
    with pytest.raises(ValueError, match="given 2 token types"):
        _ctc_mapper().set_ctc_tokens(torch.tensor([1, 2, 2]))
