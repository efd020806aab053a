"""Fidelity cards: how each defence here compares with its paper and its reference code, row by row.

A card is a YAML file beside the module that registers the defence: `<module>.card.yaml`, or
`<module>.<name>.card.yaml` for a module registering several defences (for a package's `__init__.py`, the module
is the package's name: `pkg/pkg.card.yaml`). It names the defence, the paper and the reference code, and lists
settings rows: an aspect (model, data, steps, lr, loss terms, ...), what the paper, the reference code and we do,
and exactly one "how": `same: true` (we match the reference), `switch: {field: value}` (top-level fields of the
defence's Config that restore the reference) or `reason: "..."` (why we differ and cannot switch back).

`check(name)` reports every problem of a registered defence's card (`harness cards check`, run by `make test`):
- the file is plain, strict YAML (no anchors, no repeated keys) matching `Card`: every row has its four columns
  and one how, and every aspect of REQUIRED_ASPECTS is there;
- the card names the defence it sits beside;
- each switch names fields of the Config, validates, and changes the run id: the defence's spec key
  (`PluginSpec.key_dump`, what run ids and cache keys hash) with the switch differs from the key of the run the
  default suite makes without it (`harness run --defence NAME` vs `... --set defence.FIELD=VALUE`; tuned
  settings aside). A switch that changes nothing restores nothing: the row is `same: true`, or the suite's
  value is the deviation and deserves a reason;
- replay: the Config with every switch applied trains at smoke size in process (`harness.training.smoke`, two
  optimizer steps of a tiny random Llama) to a model with finite weights.
`check_many` adds what holds across cards: every built-in defence (one declared by the distribution the
harness itself comes from) has one, and every card found beside a defence's module names a registered defence.

Reading a card imports neither torch nor any plugin: the leaderboard shows cards from the same files.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, model_validator

from harness.errors import ConfigError, HarnessError
from harness.specs import canonical_json

REQUIRED_ASPECTS = ("model", "data", "steps", "lr", "loss terms", "layers", "lora", "clipping", "precision")
SUFFIX = ".card.yaml"
MAX_CARD_BYTES = 2**16  # a card is a few KiB of prose


class Row(BaseModel):
    """One aspect of the defence: the paper's setting, the reference code's, ours, and how ours relates."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    aspect: StrictStr = Field(min_length=1, description="what is compared: model, data, lr, loss terms, ...")
    paper: StrictStr = Field(description="what the paper says ('not stated' where it says nothing)")
    code: StrictStr = Field(description="what the reference code does")
    ours: StrictStr = Field(description="what this implementation does (in the default suite, and where it differs)")
    same: Literal[True] | None = Field(None, description="ours matches the reference")
    switch: dict[StrictStr, Any] | None = Field(None, min_length=1, description="Config fields restoring the "
                                                "reference")
    reason: StrictStr | None = Field(None, min_length=1, description="why ours differs, with no switch back")

    @model_validator(mode="after")
    def _one_how(self) -> Row:
        given = [k for k in ("same", "switch", "reason") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"row '{self.aspect}' needs exactly one of `same: true`, `switch` or `reason` (it has "
                             f"{' and '.join(given) or 'none of them'})")
        return self

    @property
    def how(self) -> str:
        """The row's last column: 'same', the switch as `--set` options, or the reason."""
        if self.switch is not None:
            return " ".join(f"--set defence.{k}={canonical_json(v)}" for k, v in self.switch.items())
        return "same" if self.same else str(self.reason)


class Card(BaseModel):
    """A defence's fidelity card (the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defence: StrictStr = Field(min_length=1, description="the registered name")
    title: StrictStr = Field(min_length=1, description="the method's name and a few words")
    paper: StrictStr = Field(description="authors, year, title, venue or arXiv id ('' for no paper)")
    code: StrictStr = Field(description="the reference code read, with files and date ('' when there is none)")
    settings: tuple[Row, ...] = Field(min_length=1, description="the rows, one aspect each")

    @model_validator(mode="after")
    def _complete(self) -> Card:
        aspects = [r.aspect.strip().lower() for r in self.settings]
        problems = [f"aspect '{a}' appears {aspects.count(a)} times" for a in sorted(set(aspects))
                    if aspects.count(a) > 1]
        missing = [a for a in REQUIRED_ASPECTS if a not in aspects]
        if missing:
            problems.append(f"missing required aspect(s) {', '.join(missing)} (required: "
                            f"{', '.join(REQUIRED_ASPECTS)})")
        set_by: dict[str, tuple[str, Any]] = {}
        for row in self.settings:
            for field, value in (row.switch or {}).items():
                other = set_by.setdefault(field, (row.aspect, value))
                if other[1] != value:
                    problems.append(f"rows '{other[0]}' and '{row.aspect}' switch {field} to different values "
                                    f"({other[1]!r}, {value!r})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def switches(self) -> dict[str, Any]:
        """Every row's switch at once: the Config values that restore the reference."""
        return {k: v for row in self.settings for k, v in (row.switch or {}).items()}


# ----------------------------------------------------------------------------------------------- finding, reading
def card_file(source: Path, module: str, name: str) -> Path | None:
    """The card of defence `name` registered by `module` (whose file is `source`), if one exists."""
    stem = module.rsplit(".", 1)[-1] if source.name == "__init__.py" else source.stem
    named = [source.parent / f"{stem}.{name}{SUFFIX}"] if Path(name).name == name else []  # no path in a name
    return next((p for p in [*named, source.parent / f"{stem}{SUFFIX}"] if p.is_file()), None)


def read_card(path: Path) -> Card:
    """Read and validate a card; every problem in one `ConfigError` line naming the file."""
    from harness.strict_yaml import parse

    with open(path, "rb") as fh:
        raw = fh.read(MAX_CARD_BYTES + 1)
    if len(raw) > MAX_CARD_BYTES:
        raise ConfigError(f"card {path} is larger than {MAX_CARD_BYTES // 1024} KiB")
    data = parse(raw, f"card {path}")
    try:
        return Card.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"invalid card {path}: " + "; ".join(_error(e, data) for e in exc.errors())) from None


def _error(err: Mapping[str, Any], data: Any) -> str:
    """One validation error, its place named by the row's aspect where there is one (`settings[3] 'lora'`)."""
    loc, where = list(err["loc"]), ""
    if len(loc) >= 2 and loc[0] == "settings" and isinstance(loc[1], int):
        rows = data.get("settings") if isinstance(data, dict) else None
        row = rows[loc[1]] if isinstance(rows, list) and loc[1] < len(rows) else None
        aspect = row.get("aspect") if isinstance(row, dict) else None
        where = f"settings[{loc[1]}]" + (f" '{aspect}'" if isinstance(aspect, str) else "")
        loc = loc[2:]
    where = ".".join([where, *map(str, loc)] if where else map(str, loc)) or "(card)"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {'unknown key' if err['type'] == 'extra_forbidden' else msg}"


# ----------------------------------------------------------------------------------------------- checking
class CardReport(NamedTuple):
    """One defence's line of `harness cards check`: its problems (none: ok), or why it was skipped."""

    name: str
    problems: list[str]
    skipped: str = ""

    def line(self) -> str:
        if self.skipped:
            return f"skip {self.name}: {self.skipped}"
        return f"ok {self.name}" if not self.problems else f"FAIL {self.name}: " + "; ".join(self.problems)


def locate(name: str) -> tuple[Any, Path | None, Path | None]:
    """(plugin, the file of its registering module, its card) of a registered defence (imported)."""
    from harness import registry

    plugin = registry.get("defence", name)
    source = Path(registry.source_file(plugin)) if registry.source_file(plugin) else None
    return plugin, source, card_file(source, plugin.module, name) if source else None


def check(name: str, *, replay: bool = True) -> list[str]:
    """Every problem of the card of registered defence `name` (the module docstring's rules); [] when it passes.
    `replay=False` leaves out the smoke-size training (the one check that imports torch)."""
    plugin, source, path = locate(name)
    if path is None:
        where = source.parent / f"{source.stem}{SUFFIX}" if source else f"beside module {plugin.module}"
        return [f"no fidelity card: write {where} (the format: CONTRIBUTING.md, 'Fidelity card')"]
    try:
        card = read_card(path)
    except ConfigError as exc:
        return [str(exc)]
    if card.defence != name:
        return [f"card {path} is the card of '{card.defence}', not of '{name}'"]
    base, baseline = _baseline(plugin)
    problems = [p for row in card.settings if row.switch for p in _switch_problems(plugin, row, base, baseline)]
    if replay and not problems:
        problems += _replay(plugin, {**base, **card.switches()})
    return problems


def _baseline(plugin: Any) -> tuple[dict[str, Any], str]:
    """The values the default suite gives the defence before any `--set` (tuned settings aside), and what to
    call them; the Config's defaults where no default suite is declared."""
    from harness import registry
    from harness.resolve import load_suite

    try:
        suite_name = registry.default_name("suite")
        _, suite = load_suite(suite_name, {})
    except HarnessError:
        return {}, "the Config's defaults"
    return suite.defaults_for("defence", plugin.name, plugin.config.model_fields), f"the default suite '{suite_name}'"


def _switch_problems(plugin: Any, row: Row, base: dict[str, Any], baseline: str) -> list[str]:
    from harness.specs import PluginSpec, stable_hash, validate_config

    fields = plugin.config.model_fields
    unknown = sorted(set(row.switch or {}) - set(fields))
    if unknown:
        return [f"row '{row.aspect}': switch names {', '.join(unknown)}, not a field of the Config (fields: "
                f"{', '.join(fields) or 'it has no fields'})"]
    keys = []
    for params in (base, {**base, **(row.switch or {})}):
        try:
            cfg = validate_config(f"defence '{plugin.name}'", plugin.config, params, prefix="defence.")
        except ConfigError as exc:
            return [f"row '{row.aspect}': switch {row.switch} does not validate: {exc}"]
        spec = PluginSpec(name=plugin.name, version=plugin.version, params=cfg.model_dump(mode="json"))
        keys.append(stable_hash(spec.key_dump()))
    if keys[0] == keys[1]:
        return [f"row '{row.aspect}': switch {row.switch} does not change the run id ({baseline} already runs it): "
                "write `same: true`, or a reason"]
    return []


def _replay(plugin: Any, params: dict[str, Any]) -> list[str]:
    import tempfile

    from harness.specs import validate_config
    from harness.training import smoke

    with tempfile.TemporaryDirectory(prefix="harness-card-") as tmp:
        named = smoke.checkpoints(plugin, Path(tmp))  # the checkpoints a Config names: toy ones
        try:
            cfg = validate_config(f"defence '{plugin.name}'", plugin.config,
                                  smoke.smoke_params(plugin, {**params, **named}))
        except ConfigError as exc:
            return [f"replay: the switches together do not validate at smoke size: {exc}"]
        failed = smoke.replay(plugin, cfg)
    return [f"replay with every switch applied ({smoke.STEPS} steps at smoke size) failed: {failed}"] if failed else []


def check_many(names: Iterable[str] | None = None, *, replay: bool = True) -> list[CardReport]:
    """A report per defence: the ones named (each must be registered: else UnknownNameError, before any check),
    or every registered one plus the cards beside their modules that name no registered defence. A defence from
    another distribution without a card is skipped (a card is required of the built-ins)."""
    from harness import registry

    known = registry.names("defence")
    if names is not None:
        names = list(dict.fromkeys(names))
        for name in names:
            if name not in known:
                registry.get("defence", name)  # raises UnknownNameError: "did you mean ..."
    reports, claimed, folders = [], set(), set()
    for name in names if names is not None else known:
        try:
            plugin, source, path = locate(name)
        except HarnessError as exc:  # a broken plugin: its line says why, the others are still checked
            reports.append(CardReport(name, [str(exc)]))
            continue
        folders |= {source.parent} if source else set()
        claimed |= {path.resolve()} if path else set()
        if path is None and not _builtin(plugin):
            reports.append(CardReport(name, [], "no card (required of the built-in defences only)"))
            continue
        reports.append(CardReport(name, check(name, replay=replay)))
    if names is None:
        reports += [CardReport(p.name, [f"card {p} sits beside a defence module but is the card of no registered "
                                        "defence (rename it <module>.<name>.card.yaml or remove it)"])
                    for folder in sorted(folders) for p in sorted(folder.glob(f"*{SUFFIX}"))
                    if p.resolve() not in claimed]
    return reports


def _builtin(plugin: Any) -> bool:
    """Declared by the distribution that provides the harness itself."""
    from harness import registry

    found = registry.distribution_of(plugin)
    return found is not None and found[0] in _own_distributions()


@functools.cache
def _own_distributions() -> tuple[str, ...]:
    """The distribution(s) of the package the harness is imported from (scanning every distribution takes ~1 s)."""
    from importlib.metadata import packages_distributions

    return tuple(packages_distributions().get(__name__.split(".")[0], []))
