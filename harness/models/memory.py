"""Peak memory of a stage: CUDA's allocator peak on a GPU, the process's resident-set high-water mark on CPU.

`reset_peak()` starts a window, `peak_mb()` reads the peak since. On Linux the RSS high-water mark is reset
through /proc/self/clear_refs ("5"), so each stage gets its own peak; where that is not possible the peak
is since the process started and `memory_kind()` says so.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def _cuda() -> bool:
    if "torch" not in sys.modules:
        return False
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_initialized())


def memory_kind() -> str:
    """What `peak_mb` measures: 'cuda' (allocated on device 0), 'rss' (per stage) or 'rss-process'."""
    if _cuda():
        return "cuda"
    return "rss" if _CLEAR_REFS.exists() else "rss-process"


def reset_peak() -> None:
    """Start a new peak window."""
    if _cuda():
        import torch

        torch.cuda.reset_peak_memory_stats()
        return
    with contextlib.suppress(OSError):  # not Linux, or not allowed: the peak stays process-wide
        _CLEAR_REFS.write_text("5")


def peak_mb() -> float:
    """Peak memory in MiB since the last `reset_peak` (see `memory_kind`)."""
    if _cuda():
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
