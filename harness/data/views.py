"""What each stage may read of the suite's data, declared once, and the views of `SuiteData` built from it.

`STAGE_SPLITS` is an allow-list: a stage's view keeps the splits named there (and the build evidence, which
is counts, not data); every other field of `SuiteData`, `other` included, is a stand-in that raises
`SplitAccessError` on any use and logs the split it stood for. The view is computed from
`dataclasses.fields(SuiteData)`, so a field added to `SuiteData` later is withheld from every stage until a
stage's entry names it.

The pipeline's defend and attack stages, the evaluator (and the attack a trainability protocol runs after its
fine-tune) and `harness plugins check` all take their views from here. The defend and attack stages (and the
check) run the plugin in its own process (`harness.sandbox`), which receives only the allowed splits and
rebuilds this view around them, so a withheld split is not even in the plugin's memory; the trainability
protocol's attack is called in-process through `call_plugin`. Either way the stage fails when anything withheld
was touched, even if the plugin caught the error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from harness.data.splits import DECLARABLE, METADATA, STAGE_SPLITS  # the declaration (a leaf module)
from harness.errors import HarnessError
from harness.suite import SuiteData

if TYPE_CHECKING:
    from harness.plugins import StageContext

__all__ = ["DECLARABLE", "METADATA", "STAGE_SPLITS", "SplitAccessError", "Withheld", "allowed", "call_plugin",
           "message", "view"]


class SplitAccessError(HarnessError):
    """A stage touched a split it must not see. A plugin that does breaks the benchmark's contract: the run
    stops with one line (exit 2), as for any bad input."""


def allowed(stage: str, reads: Iterable[str] = ()) -> tuple[str, ...]:
    """The splits `stage` may read, with the further splits its plugin declares (`reads`, from `DECLARABLE`)."""
    if stage not in STAGE_SPLITS:
        raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGE_SPLITS)}")
    extra = tuple(r for r in dict.fromkeys(reads) if r not in STAGE_SPLITS[stage])
    bad = [r for r in extra if r not in DECLARABLE.get(stage, ())]
    if bad:
        raise ValueError(f"the {stage} stage cannot be given {', '.join(bad)}; a plugin of it may declare only "
                         f"{', '.join(DECLARABLE.get(stage, ())) or 'nothing'}")
    return STAGE_SPLITS[stage] + extra


def message(stage: str, splits: Iterable[str], who: str = "", reads: Iterable[str] = ()) -> str:
    """One line: who read which withheld split(s), and what the stage may read."""
    names = list(dict.fromkeys(splits))
    quoted = ", ".join(f"'{n}'" for n in names)
    return (f"{who or f'the {stage} stage'} read the {quoted} split{'s' if len(names) > 1 else ''}; "
            f"the {stage} stage may read only {' and '.join(allowed(stage, reads))}")


class Withheld:
    """Stands in for a split a stage must not read: it holds no data, and any use (attribute, len, iteration,
    indexing, truth value, membership, call) logs the split and raises `SplitAccessError`. Dunder probes
    (pickle, numpy) get AttributeError and copies are the object itself: they read nothing, and the object
    has nothing to give."""

    __slots__ = ("_log", "_split", "_stage")

    def __init__(self, split: str, stage: str, log: list[str]):
        object.__setattr__(self, "_split", split)
        object.__setattr__(self, "_stage", stage)
        object.__setattr__(self, "_log", log)

    def _deny(self, *_args: Any, **_kw: Any) -> Any:
        split = object.__getattribute__(self, "_split")
        object.__getattribute__(self, "_log").append(split)
        raise SplitAccessError(message(object.__getattribute__(self, "_stage"), [split]))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._deny()

    __setattr__ = __delattr__ = __getitem__ = __len__ = __iter__ = __bool__ = __contains__ = __call__ = _deny

    def __copy__(self) -> Withheld:  # holds no data: a copied context (a plugin's deepcopy) shares its log
        return self

    def __deepcopy__(self, _memo: Any) -> Withheld:
        return self

    def __repr__(self) -> str:
        get = object.__getattribute__
        return f"<split '{get(self, '_split')}': not visible to the {get(self, '_stage')} stage>"


def view(data: SuiteData, stage: str, log: list[str] | None = None, reads: Iterable[str] = ()) -> SuiteData:
    """`data` as `stage` may see it: its allowed splits (and those its plugin declares, `reads`) and the evidence
    kept, every other field (present now or added later) a `Withheld` that appends the split's name to `log`."""
    keep = {*allowed(stage, reads), *METADATA}
    log = [] if log is None else log
    return dataclasses.replace(data, **{f.name: Withheld(f.name, stage, log) for f in dataclasses.fields(data)
                                        if f.name not in keep})


def call_plugin(stage: str, plugin: Any, model: Any, cfg: Any, ctx: StageContext) -> Any:
    """Apply a defence or attack plugin (`registry.Plugin`) as every stage does: `plugin.fn(model, cfg, ctx)`
    with `ctx.data` replaced by the stage's view. If the plugin touched a withheld split, the stage fails with
    `SplitAccessError` naming the plugin, whether the plugin let the error through, raised another, or caught
    it and went on (the view's log shows the access)."""
    from harness.models.plugin_inputs import checkpoint_fields, located

    log: list[str] = []
    ctx = dataclasses.replace(ctx, data=view(ctx.data, stage, log, plugin.reads))
    if checkpoint_fields(cfg) and not ctx.checkpoints:  # as the plugin's process gets them
        ctx = dataclasses.replace(ctx, checkpoints=located(cfg))
    who = f"{plugin.kind} '{plugin.name}'"
    try:
        result = plugin.fn(model, cfg, ctx)
    except Exception as exc:
        if log:
            raise SplitAccessError(message(stage, log, who, plugin.reads)) from exc
        raise
    if log:
        raise SplitAccessError(message(stage, log, who, plugin.reads))
    return result
