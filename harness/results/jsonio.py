"""Bounded JSON reading for every file a user can hand the harness: run records, tuning and scan logs,
table metadata.

`json.loads` recurses once per nesting level, so one file of 200,000 nested brackets raises RecursionError
(and a validator walking a few hundred levels does too), and a multi-gigabyte file is read whole into memory.
Every reader of those files goes through `read_json` / `loads`, which refuse a file over `MAX_BYTES` or nested
deeper than `MAX_DEPTH` before parsing, with a `JSONLimitError`. That is a `json.JSONDecodeError`, so every
reader that already reports an unparsable file on one line and goes on with the rest does the same for these.

The depth is counted by one linear regular-expression pass over the text (strings skipped, brackets counted),
never by recursion. The limits are far above what the harness writes: a record nests 7 levels and weighs
under 100 KB.
"""

from __future__ import annotations

import json
import os
import re
import stat
from itertools import accumulate
from pathlib import Path
from typing import Any

MAX_DEPTH = 64
MAX_BYTES = 64 * 2**20

# A JSON string, to its closing quote or to the end of a torn file: it never fails to match, so the scan is
# linear whatever the text; possessive, so nothing is retried; unrolled (runs of plain characters, then one
# escape), which is twice as fast as one character per step.
_STRING = r'"[^"\\]*+(?:\\.[^"\\]*+)*+(?:"|\\?\Z)'
_STRINGS = re.compile(_STRING, re.S)
_TOKEN = re.compile(_STRING + r"|[\[\]{}]", re.S)  # a string or one bracket
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_DELTA = {"[": 1, "{": 1, "]": -1, "}": -1}


class JSONLimitError(json.JSONDecodeError):
    """A JSON text refused before parsing: nested too deep, or too large."""


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise `JSONLimitError` at the first bracket nested deeper than `max_depth` (strings do not count)."""
    brackets = _NOT_BRACKETS.sub("", _STRINGS.sub("", text))
    # The running depth in C (map, accumulate, max): no Python step per token.
    if max(accumulate(map(_DELTA.__getitem__, brackets)), default=0) <= max_depth:
        return
    depth = 0
    for match in _TOKEN.finditer(text):  # too deep: find where, for the error's line and column
        ch = text[match.start()]
        if ch in "[{":
            depth += 1
            if depth > max_depth:
                raise JSONLimitError(f"nested deeper than {max_depth} levels", text, match.start())
        elif ch in "]}":
            depth -= 1


def loads(text: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` of a text nested at most `max_depth` levels (else `JSONLimitError`)."""
    if isinstance(text, bytes):
        text = text.decode()  # UnicodeDecodeError, as json.loads would raise
    check_depth(text, max_depth)
    return json.loads(text)


def read_text(path: Path, *, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of a file of at most `max_bytes` bytes (else `JSONLimitError`); OSError and
    UnicodeDecodeError as `Path.read_text` raises them."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):  # a FIFO or device would block or never end
        raise JSONLimitError("not a regular file", "", 0)
    with open(path, "rb") as fh:  # a folder: IsADirectoryError, as Path.read_text
        raw = fh.read(max_bytes + 1)  # never more: a huge (or endless) file costs max_bytes of memory at most
    if len(raw) > max_bytes:
        raise JSONLimitError(f"larger than {max_bytes / 2**20:g} MiB", "", 0)
    return raw.decode()


def read_json(path: Path, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """A JSON file of at most `max_bytes` bytes and `max_depth` levels. Raises what reading and parsing raise
    (OSError, UnicodeDecodeError, json.JSONDecodeError), `JSONLimitError` for a file beyond the limits."""
    return loads(read_text(path, max_bytes=max_bytes), max_depth)
