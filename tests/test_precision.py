"""`--mixed-precision auto`: bf16 only where the device computes it natively."""

import pytest
import torch

from smap import precision
from smap.precision import resolve


def _cpu(monkeypatch, machine="x86_64", **caps):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx2": True, **caps})
    monkeypatch.setattr(precision.platform, "machine", lambda: machine)


def test_auto_on_this_machine_follows_its_capability():
    caps = torch.cpu.get_capabilities()
    native = bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))
    chosen = resolve("auto", "cpu")
    assert chosen.mixed_precision == ("bf16" if native else "no")
    assert chosen.dtype == (torch.bfloat16 if native else torch.float32)
    assert chosen.reason.startswith("auto: CPU")


@pytest.mark.parametrize("caps, expected, why", [
    ({}, "no", "AVX2 without bf16 arithmetic"),
    ({"avx512_f": True}, "no", "AVX512 without bf16 arithmetic"),
    ({"avx512_f": True, "avx512_bf16": True}, "bf16", "with AVX512-BF16"),
    ({"avx512_f": True, "amx_bf16": True}, "bf16", "with AMX-BF16"),
])
def test_auto_on_a_cpu_picks_bf16_only_with_native_support(monkeypatch, caps, expected, why):
    _cpu(monkeypatch, **caps)
    chosen = resolve("auto", "cpu")
    assert chosen.mixed_precision == expected
    assert why in chosen.reason and chosen.record()["reason"] == chosen.reason


def test_kernels_held_below_the_cpu_are_said(monkeypatch):
    # ATEN_CPU_CAPABILITY=avx2 on an AVX-512 CPU: the run is recorded as an AVX2 one would be.
    _cpu(monkeypatch, avx512_f=True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert resolve("auto", "cpu").reason == "auto: CPU AVX512 without bf16 arithmetic, torch kernels AVX2"
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    assert resolve("auto", "cpu").reason == "auto: CPU AVX512 without bf16 arithmetic"


def test_auto_on_an_arm_cpu_reads_the_bf16_feature(monkeypatch):
    _cpu(monkeypatch, machine="aarch64")
    monkeypatch.setattr(precision, "_arm_cpu_flags", lambda: {"fp", "asimd", "bf16"})
    assert resolve("auto", "cpu").mixed_precision == "bf16"
    monkeypatch.setattr(precision, "_arm_cpu_flags", lambda: {"fp", "asimd"})
    assert resolve("auto", "cpu").mixed_precision == "no"


def test_an_explicit_bf16_on_a_cpu_without_it_is_kept_and_its_cost_said(monkeypatch):
    _cpu(monkeypatch)
    chosen = resolve("bf16", "cpu")
    assert chosen.mixed_precision == "bf16" and "emulated" in chosen.reason
    assert resolve("no", "cpu").record() == {"mixed_precision": "no", "dtype": "fp32", "device": "cpu",
                                             "reason": "chosen"}


@pytest.mark.parametrize("bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_auto_on_a_gpu_picks_bf16_where_it_has_it_else_fp16(monkeypatch, bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "GPU")
    assert resolve("auto", "cuda").mixed_precision == expected


def test_an_unknown_precision_is_refused_by_name():
    with pytest.raises(ValueError, match="--mixed-precision must be one of auto, no, fp16, bf16, not 'fp8'"):
        resolve("fp8", "cpu")


def test_a_training_run_computes_in_the_resolved_precision_and_says_so(tmp_path, capsys, fresh_accelerate_state):
    from smap.training import LoopConfig, make_accelerator

    acc, chosen = make_accelerator(LoopConfig(out=str(tmp_path)))  # the default: auto
    assert chosen == resolve("auto", "cpu") and acc.mixed_precision == chosen.mixed_precision
    assert f"precision: {chosen}" in capsys.readouterr().err.replace("\n", " ")
