"""The floating-point precision a run computes in, chosen by what its device does well.

bf16 halves the memory of weights and activations and, on hardware with bf16 arithmetic, speeds up
matrix products: NVIDIA GPUs from Ampere on, x86 CPUs with AVX512-BF16 or AMX, Arm CPUs with the BF16
extension. Elsewhere a CPU emulates bf16 products, far slower than fp32 (a (1024x576) @ (576x1536)
product took 32x as long on a 2-core AVX2 EPYC), so `auto` picks bf16 on a CPU only where it is
native. A GPU without bf16 (before Ampere) gets fp16.

The names are Accelerate's `mixed_precision` values: 'no' (fp32), 'fp16', 'bf16'; plus 'auto'.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import torch

CHOICES = ("auto", "no", "fp16", "bf16")
DTYPES = {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
NAMES = {"no": "fp32", "fp16": "fp16", "bf16": "bf16"}


@dataclass(frozen=True)
class Precision:
    """What a run computes in (`mixed_precision`: 'no', 'fp16' or 'bf16'), why, and on what."""

    mixed_precision: str
    reason: str
    device: str

    @property
    def dtype(self) -> torch.dtype:
        """The dtype a frozen model's weights are loaded in."""
        return DTYPES[self.mixed_precision]

    def record(self) -> dict:
        """For a run's report: the choice, in words, and why."""
        return {"mixed_precision": self.mixed_precision, "dtype": NAMES[self.mixed_precision],
                "device": self.device, "reason": self.reason}

    def __str__(self) -> str:
        return f"{NAMES[self.mixed_precision]} on {self.device} ({self.reason})"


def _arm_cpu_flags() -> set[str]:
    """The Features line of /proc/cpuinfo on Linux Arm ('bf16' names the BF16 extension)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.lower().startswith("features") for flag in line.split(":", 1)[1].split()}


def cpu_bf16() -> tuple[bool, str]:
    """Whether this CPU computes bf16 natively, and the capability that says so (or what it has instead)."""
    caps = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    native = [name for name in ("amx_bf16", "avx512_bf16") if caps.get(name)]
    if native:
        return True, " and ".join(native).upper().replace("_", "-")
    if platform.machine().lower() in ("aarch64", "arm64") and "bf16" in _arm_cpu_flags():
        return True, "Arm BF16"
    best = next((name for name in ("avx512_f", "avx2") if caps.get(name)), None)
    has = best.upper().replace("_F", "") if best else caps.get("architecture", platform.machine())
    # ATEN_CPU_CAPABILITY can hold torch to lower kernels than the CPU has (AVX2 on an AVX-512 CPU): say so.
    kernels = torch.backends.cpu.get_cpu_capability()
    return False, f"{has} without bf16 arithmetic" + (f", torch kernels {kernels}" if best and kernels != has else "")


def resolve(requested: str = "auto", device: str | torch.device | None = None) -> Precision:
    """The precision to run in on `device` (default: CUDA if there is one, else the CPU).

    `auto`: bf16 on a GPU that has it, fp16 on one that has not; on a CPU bf16 where it is native,
    else fp32. An explicit choice is kept, with the reason saying what it costs on this device.
    """
    if requested not in CHOICES:
        raise ValueError(f"--mixed-precision must be one of {', '.join(CHOICES)}, not {requested!r}")
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        where = torch.cuda.get_device_name(device)
        if requested == "auto":
            return Precision("bf16" if bf16 else "fp16", f"auto: {where} {'has' if bf16 else 'lacks'} bf16", "cuda")
        return Precision(requested, "chosen", "cuda")
    native, what = cpu_bf16()
    if requested == "auto":
        return Precision("bf16" if native else "no", f"auto: CPU {'with ' + what if native else what}", device.type)
    if requested == "bf16" and not native:
        return Precision("bf16", f"chosen; CPU {what}: emulated, far slower than fp32", device.type)
    return Precision(requested, "chosen", device.type)
