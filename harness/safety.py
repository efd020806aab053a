"""Hostile-input guards shared by the CLI and the readers: safe names, path containment, one-line messages.

Names and paths typed on the command line end up in file paths (`results/<suite>/v<N>/<run id>.json`) and
in error lines. A name with `/` or `..` could address files outside the results dir or the store, and a
name with a newline could forge a second `error:` line that a script parsing stderr would believe.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from harness.errors import HarnessError

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_RUN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Control characters, format characters (bidi overrides, zero-width) and Unicode line/paragraph separators.
_UNSAFE_CATEGORIES = {"Cc", "Cf", "Zl", "Zp"}


def escape_controls(text: str) -> str:
    """`text` on one line: every control or invisible character is written repr-style (`\\n`, `\\x1b`, `\\u202e`)."""
    out = []
    for ch in text:
        if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
            out.append(repr(ch)[1:-1])
        else:
            out.append(ch)
    return "".join(out)


def clip(text: str, limit: int = 300) -> str:
    """`text` on one line, whole if it fits in `limit` characters; else cut at the last word that fits, saying how
    much was left out (a hostile input can make a parser's message as long as the input itself)."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    head = text[:limit + 1].rsplit(" ", 1)[0] if " " in text[:limit + 1] else text[:limit]
    return f"{head} ... ({len(text) - len(head)} more characters)"


def check_name(value: str, what: str) -> str:
    """A name that becomes one path component: letters, digits, `_ . -`, no leading dot, no `..`."""
    if not _SAFE_NAME.fullmatch(value) or ".." in value:
        raise HarnessError(f"{what} '{value}' is not a valid name: use letters, digits, '_', '.', '-' "
                           "(no path separators, no '..', at most 128 characters)")
    return value


def check_run_id(value: str) -> str:
    """A run id or a prefix of one (run ids are hex; no glob characters, no dots, no separators)."""
    if not _RUN_ID.fullmatch(value):
        raise HarnessError(f"run id '{value}' is not a valid run id or prefix: use letters, digits, '_', '-'")
    return value


def inside(path: Path, root: Path, what: str) -> Path:
    """`path`, checked to resolve (symlinks followed) to `root` or below it."""
    resolved, base = Path(path).resolve(), Path(root).resolve()
    if resolved != base and base not in resolved.parents:
        raise HarnessError(f"{what} {path} resolves to {resolved}, outside {base}")
    return path
