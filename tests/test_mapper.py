import pytest
import torch

from smap.mapper import MapperConfig, SpeechMapper, length_mask, preset


def test_paper_preset_has_the_papers_size():
    model = SpeechMapper(preset("paper", 1024, 4096))
    assert abs(model.num_parameters() - 277e6) / 277e6 < 0.03
    assert model.config.dims == (1024, 2048, 4096) and model.config.n_layers == 6 and model.config.kernel_size == 6


def test_output_is_four_times_shorter_and_lengths_follow():
    cfg = preset("tiny", 16, 24)
    model = SpeechMapper(cfg).eval()
    lengths = torch.tensor([40, 23, 9])
    out, out_len = model(torch.randn(3, 40, 16), lengths)
    assert out.shape == (3, 10, 24)
    assert out_len.tolist() == [10, 5, 2]  # L // 2 // 2
    assert cfg.output_lengths(lengths).tolist() == [10, 5, 2]


def test_padding_does_not_change_outputs():
    torch.manual_seed(0)
    model = SpeechMapper(preset("tiny", 16, 24)).eval()
    short = torch.randn(1, 23, 16)
    alone, n_alone = model(short, torch.tensor([23]))
    padded = torch.cat([short, torch.randn(1, 17, 16) * 100], dim=1)  # garbage in the padding
    batch = torch.cat([padded, torch.randn(1, 40, 16)])
    out, n = model(batch, torch.tensor([23, 40]))
    assert n[0] == n_alone[0] == 5
    torch.testing.assert_close(out[0, :5], alone[0, :5], atol=1e-5, rtol=1e-5)


def test_input_pooling_shortens_by_its_factor_and_ignores_padding():
    torch.manual_seed(0)
    cfg = preset("tiny", 16, 24, pool=2)
    model = SpeechMapper(cfg).eval()
    assert cfg.downsampling == 8
    lengths = torch.tensor([40, 23, 9])
    out, out_len = model(torch.randn(3, 40, 16), lengths)
    assert out.shape == (3, 5, 24) and out_len.tolist() == [5, 2, 1] == cfg.output_lengths(lengths).tolist()
    short = torch.randn(1, 23, 16)  # odd: its last frame is a partial window, dropped alone and in a batch
    alone, _ = model(short, torch.tensor([23]))
    batch = torch.cat([torch.cat([short, torch.randn(1, 17, 16) * 100], dim=1), torch.randn(1, 40, 16)])
    out, _ = model(batch, torch.tensor([23, 40]))
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


def test_length_mask():
    assert length_mask(torch.tensor([2, 0, 3]), 3).tolist() == [[True, True, False], [False] * 3, [True] * 3]
