"""Where the model runs and in which number format: CUDA where present, else the CPU; bf16 where the hardware
computes in it natively, else float32 on the CPU (fp16 on a CUDA GPU without bf16)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from lift_tool.errors import ModelError

if TYPE_CHECKING:
    import torch

# /proc/cpuinfo flags of instructions that compute in bf16 (not merely convert to and from it), by the name of
# the line that lists them: x86 ("flags") AVX512_BF16 (Zen 4, Cooper Lake and later) or AMX (Sapphire Rapids
# and later); Arm ("Features") the BF16 extension (Neoverse V1/N2, Graviton 3 and later).
NATIVE_BF16_FLAGS = {"flags": {"avx512_bf16", "amx_bf16"}, "features": {"bf16"}}


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {requested!r} was asked for but no CUDA GPU is available; use --device cpu")
    return requested


def cpuinfo_has_native_bf16(cpuinfo: str) -> bool:
    """Whether the text of /proc/cpuinfo lists bf16 instructions: ``avx512_bf16`` or ``amx_bf16`` among an x86
    processor's ``flags``, ``bf16`` among an Arm processor's ``Features``."""
    for line in cpuinfo.splitlines():
        name, colon, values = line.partition(":")
        wanted = NATIVE_BF16_FLAGS.get(name.strip().lower())
        if colon and wanted and wanted & set(values.split()):
            return True
    return False


@functools.cache
def cpu_has_bf16_kernels() -> bool:
    """Whether this CPU computes in bf16 natively (x86 with AVX512_BF16 or AMX, Arm with BF16) and PyTorch's
    oneDNN has bf16 kernels for it: there the model answers in bf16 and absorption trains under bf16 autocast.

    oneDNN alone also says yes on x86 with AVX-512 but without AVX512_BF16, where it only emulates bf16 with
    float32 instructions and conversions: on such a machine the demo's absorption took 357 s in bf16 against
    140 s in float32. The instructions are read from /proc/cpuinfo (Linux); elsewhere the answer is no, and
    the model runs in float32.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            native = cpuinfo_has_native_bf16(handle.read())
    except OSError:
        return False
    if not native:
        return False
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def pick_dtype(device: str, requested: str = "auto") -> "torch.dtype":
    """CUDA: bf16 where supported (else fp16). CPU: bf16 where the CPU has bf16 instructions (AVX512_BF16 or AMX
    on x86, BF16 on Arm; see :func:`cpu_has_bf16_kernels`), else fp32. There bf16 reads prompts about 3x as fast
    (benchmarks/results/dtype/dtype.md). Set ``dtype`` (LIFT_DTYPE) to float32 to keep full precision."""
    import torch

    if requested != "auto":
        return getattr(torch, requested)
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_has_bf16_kernels() else torch.float32
