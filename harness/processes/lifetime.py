"""A child process that ends with its parent."""

from __future__ import annotations

import contextlib
import os
import sys


def die_with_parent(parent: int | None = None) -> bool:
    """Arm the kernel's parent-death signal (Linux): SIGKILL to this process the moment its parent is gone.
    False where there is none; exits if the parent (`parent`, by default the present one) died before it was
    armed."""
    parent = os.getppid() if parent is None else parent
    if not sys.platform.startswith("linux"):
        return False
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)
    return True
