"""The memory an evaluation reports: peak resident memory (and CUDA memory) over a block of work."""

from __future__ import annotations

import sys
import threading


class MemoryMeter:
    """Peak resident memory (and CUDA memory) over a block, sampled by a background thread every 20 ms."""

    def __init__(self, interval: float = 0.02):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._peak = self._start = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self._peak = max(self._peak, self._process.memory_info().rss)

    def start(self) -> None:
        """Begin a measurement. Memory freed earlier (an absorption's) is first handed back to the system, so the
        peak reflects what the block itself holds rather than the allocator's leftovers."""
        _return_freed_memory()
        self._start = self._peak = self._process.memory_info().rss
        if _cuda():
            import torch

            torch.cuda.reset_peak_memory_stats()

    def peak(self) -> dict:
        """Peak RSS (MiB) since :meth:`start`, and the CUDA peak where a GPU is used."""
        self._peak = max(self._peak, self._process.memory_info().rss)
        result = {"peak_rss_mib": round(self._peak / 2**20, 1), "added_rss_mib": round((self._peak - self._start) / 2**20, 1)}
        if _cuda():
            import torch

            result["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return result

    def close(self) -> None:
        self._stop.set()


def _return_freed_memory() -> None:
    """glibc's malloc_trim: give freed heap memory back to the operating system (a no-op elsewhere)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _cuda() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized())
