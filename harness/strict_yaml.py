"""Strict, bounded YAML for files a user or a submitter writes (grid files, fidelity cards).

PyYAML's safe loader, stricter: a repeated key is an error (PyYAML keeps the last silently), `1e-4` is a float
(YAML 1.1 needs `1.0e-4`), and anchors and aliases are refused: an alias expands without copying, so 600 bytes of
nested aliases (a "billion laughs") become 10^9 values once validated. Nesting is limited to MAX_DEPTH: composing
recurses once per level. Every problem is one `ConfigError` line naming the file.
"""

from __future__ import annotations

import re
from collections.abc import Hashable
from typing import Any

import yaml

from harness.errors import ConfigError
from harness.safety import clip

MAX_DEPTH = 32  # nested collections (a grid needs about 6, a card 4)


class StrictLoader(yaml.SafeLoader):
    """The loader of the module docstring."""

    def __init__(self, stream: Any):
        super().__init__(stream)
        self.depth = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # `[` / `{` refused as scanned: the scanner reads ahead about 1 KiB of tokens for each, so waiting for
        # compose_node would cost seconds on a file of brackets.
        if self.flow_level >= MAX_DEPTH:
            raise ConfigError(f"line {self.line + 1}: nested deeper than {MAX_DEPTH} levels")
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ConfigError(f"line {line}: YAML anchors and aliases (&name, *name) are not allowed here; "
                              "write each value out")
        if self.depth >= MAX_DEPTH:
            raise ConfigError(f"line {line}: nested deeper than {MAX_DEPTH} levels")
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if not isinstance(key, Hashable):  # `? [a, b]` or `{[1]: x}`: a list or mapping as a key
            raise ConfigError(f"line {key_node.start_mark.line + 1}: a key must be a plain value, not a "
                              f"{type(key).__name__}")
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: duplicate key '{key}'")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


StrictLoader.add_constructor("tag:yaml.org,2002:map", _mapping)
StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(
    r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|\.inf|\.nan)$", re.X),
    list("-+0123456789."))


def parse(raw: bytes, what: str) -> Any:
    """The data of a YAML file's bytes (read with a bound by the caller); `what` names the file in errors
    ('grid file grids/x.yaml')."""
    try:
        return yaml.load(raw.decode(), Loader=StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except ConfigError as exc:
        raise ConfigError(f"{what}: {exc}") from None
    except (yaml.YAMLError, ValueError) as exc:  # ValueError: not UTF-8, an integer of over 4300 digits
        why = str(exc).split("; use sys.set_int_max_str_digits")[0]  # Python's advice is not the user's fix
        raise ConfigError(f"{what} is not valid YAML: {clip(why)}") from None
