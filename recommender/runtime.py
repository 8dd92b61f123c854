"""Process-wide settings, made once at start by the app and the scripts (the library sets nothing on import)."""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image
from threadpoolctl import threadpool_limits

from .images import MAX_PIXELS

if TYPE_CHECKING:  # torch is imported only where it is used: configure_runtime must run before it loads
    import torch


def configure_runtime(build: bool = False) -> None:
    """- One BLAS thread: numpy's OpenBLAS threads keep spinning after a matmul and starve the model's
      threads on a 2-core machine (an exact scan between queries made search p50 130 ms instead of 30).
    - Pillow's own decompression-bomb limit at the loader's, so decoders we do not call ourselves
      (Gradio's upload preview) are protected too.
    - `build`: idle OpenMP threads sleep instead of spinning, so the decode process gets a core without
      stalling the model (faster precompute; it would double a query's latency in the app). It takes
      effect only if torch is not loaded yet: call this first."""
    threadpool_limits(limits=1, user_api="blas")
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    if build:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def release_freed_memory() -> None:
    """Hand the heap's freed pages back to the OS (glibc's malloc_trim; nothing elsewhere): after a
    one-off burst of allocations, such as the int8 conversion at load, so the serving process's peak
    does not carry them. Collects Python's reference cycles first (a converted model's graph is one)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def bf16_supported(device: torch.device) -> bool:
    """bf16 pays off where the hardware has native bf16 (AVX-512 BF16/AMX on CPU, Ampere+ GPUs)."""
    import torch

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


# Environment caps on the kernels' instruction sets (an AVX2 CPU emulated on a newer one: benchmark.py).
ISA_CAPS = ("ONEDNN_MAX_CPU_ISA", "FBGEMM_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def cpu_info() -> dict:
    """The CPU's model name, the flags that decide the model's paths, and any cap on the kernels' ISA."""
    import torch

    lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []

    def field(name: str) -> str:
        return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(name)), "")

    flags = [f for f in field("flags").split() if f.startswith(("avx", "amx", "fma", "f16c"))]
    return {
        "model": field("model name"),
        "flags": flags,
        "cores": os.cpu_count(),
        "torch_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_caps": {k: os.environ[k] for k in ISA_CAPS if k in os.environ},
    }
