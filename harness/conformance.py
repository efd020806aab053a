"""`harness plugins check NAME`: does a defence keep the contract every built-in keeps?

A submitted defence is compared with the others only if it plays by the same rules, so the check runs it
for real, twice, on the smoke-size tiny suite (built in about a minute, or reused from the store) and
reports one line per rule:

- its Config is valid (strict, defaults validate, the suite's values validate), documented (a
  description on every field) and hashable (frozen, canonical JSON: it enters the run id);
- it declares a version (it enters every cache key and result row);
- it reads no split it must not see: it gets the defence stage's view of the data (`harness.data.views`, the
  same view a real run gives it), where every split but defence and retain is a stand-in that raises, naming
  the split, on any use (and is logged, in case the defence swallows the error);
- it returns a model of the input's class and parameter shapes (or None: unchanged), which saves with
  `save_pretrained` and loads back equal; two runs with the same seed give equal weights (`torch.equal`
  on every tensor); no forward/backward hook is left on any module, nor globally;
- it runs within the smoke budget: at most TIME_FACTOR times the wall time of one epoch of plain SFT on
  refusals over the same defence split at the suite's defence budget, measured on the same machine just
  before (floor: TIME_FLOOR_S seconds), so the limit means the same on a laptop and on a GPU node.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness import registry
from harness.data.views import message, view
from harness.plugins import StageContext
from harness.specs import stable_hash
from harness.suite import Suite, SuiteData

TIME_FACTOR = 10.0  # RepNoise, the costliest built-in, takes about 3-4x an SFT step (benchmarks/)
TIME_FLOOR_S = 30.0
RUN_CHECKS = ("reads no forbidden split", "runs", "same architecture", "saves and loads", "same seed, same weights",
              "no hooks left", "within time budget")


@dataclass(frozen=True)
class Result:
    """One line of the report: a check (ok True/False, None = skipped) or an info line (check '')."""

    check: str
    ok: bool | None
    detail: str = ""

    def line(self) -> str:
        if not self.check:
            return f"INFO {self.detail}"
        word = {True: "PASS", False: "FAIL", None: "SKIP"}[self.ok]
        return f"{word} {self.check}" + (f": {self.detail}" if self.detail else "")


# ----------------------------------------------------------------------------- static checks (no torch)
def config_checks(plugin: registry.Plugin, suite_values: dict[str, Any]) -> list[Result]:
    """Config valid, documented, hashable; version declared."""
    cls = plugin.config
    out: list[Result] = []
    cfg: BaseModel | None = None
    try:
        if cls.model_config.get("extra") != "forbid":
            raise ValueError("model_config needs extra='forbid' (a misspelt --set must be an error)")
        cls()  # every field has a default: a run needs no value the suite cannot give
        cfg = cls.model_validate(suite_values)
        if cls.model_validate(cfg.model_dump(mode="json")) != cfg:
            raise ValueError("model_dump(mode='json') does not validate back to an equal Config")
        out.append(Result("config valid", True))
    except (ValidationError, ValueError, TypeError) as exc:
        out.append(Result("config valid", False, _first_line(exc)))
    missing = [n for n, f in cls.model_fields.items() if not (f.description or "").strip()]
    out.append(Result("config documented", not missing,
                      f"no description on field(s) {', '.join(missing)}" if missing else ""))
    out.append(_hashable(cfg))
    declared = plugin.version.strip() not in ("", "None")
    out.append(Result("version declared", declared, "" if declared else "register it with version='1'"))
    return out


def _hashable(cfg: BaseModel | None) -> Result:
    """Frozen (a defence cannot change the values its run id was computed from) and canonical JSON (the run
    id is the hash of the spec's canonical JSON, so NaN or a non-JSON value has no run id)."""
    if cfg is None:
        return Result("config hashable", None, "no valid Config to hash")
    if not type(cfg).model_config.get("frozen"):
        return Result("config hashable", False, "the Config is not frozen (model_config needs frozen=True)")
    try:
        stable_hash(cfg)
    except (TypeError, ValueError) as exc:
        return Result("config hashable", False, f"{_first_line(exc)} (its values must be canonical JSON)")
    return Result("config hashable", True)


def info(plugin: registry.Plugin, suite: Suite) -> list[Result]:
    """Where the plugin comes from and whether it gets the suite's training budget."""
    dist = registry.distribution_of(plugin)
    where = (f"from distribution {dist[0]} {dist[1]}" if dist else
             f"declared by no installed distribution: add an entry point in group '{registry.group('defence')}'")
    out = [Result("", None, f"defence '{plugin.name}' v{plugin.version} {where} ({registry.source_file(plugin)})")]
    budget = dict(suite.defence_defaults)
    lacking = [k for k in budget if k not in plugin.config.model_fields]
    if lacking == list(budget) and budget:
        out.append(Result("", None, f"does not declare the suite's training fields {', '.join(lacking)}: gets no "
                                    "suite budget (subclass harness.plugins.DefenceTrainingFields if it trains)"))
    elif lacking:
        out.append(Result("", None, f"does not declare the suite's training field(s) {', '.join(lacking)}: gets "
                                    "only part of the suite budget"))
    elif budget:
        out.append(Result("", None, "gets the suite's training budget " +
                          ", ".join(f"{k}={v}" for k, v in budget.items())))
    return out


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# ----------------------------------------------------------------------------- running it
@dataclass
class Attempt:
    """One call of the defence on a freshly loaded base model."""

    model: Any
    result: Any = None
    error: str = ""
    seconds: float = 0.0
    hooks_left: list[str] = field(default_factory=list)

    @property
    def output(self) -> Any:
        return self.model if self.result is None else self.result


def attempt(plugin: registry.Plugin, cfg: BaseModel, base: Path, data: SuiteData, *, max_length: int,
            seed: int) -> Attempt:
    """Load the base, run one forward pass asking for hidden states and attentions (transformers installs
    its own output-capturing hooks on first such use, and keeps them), count the hooks per module, call
    the defence, and name every module (of the input or the returned model) with more hooks than before."""
    import torch

    from harness.models.loading import load_causal_lm

    model, tok = load_causal_lm(base)
    with torch.no_grad():
        model(input_ids=torch.tensor([[tok.eos_token_id or 0]], device=model.device), output_hidden_states=True,
              output_attentions=True)
    before, global_before = _hook_counts(model), _global_hooks()
    run = Attempt(model=model)
    ctx = StageContext(tokenizer=tok, data=data, max_length=max_length, seed=seed)
    start = time.perf_counter()
    try:
        run.result = plugin.fn(model, cfg, ctx)
    except Exception as exc:  # the plugin's failure is the check's finding, reported by name
        run.error = f"{type(exc).__name__}: {_first_line(exc)}"
    run.seconds = time.perf_counter() - start
    for out in (model, run.result) if run.result is not None and run.result is not model else (model,):
        run.hooks_left += [n for n, k in _hook_counts(out).items() if k > before.get(n, 0)]
    if _global_hooks() > global_before:
        run.hooks_left.append("torch.nn.modules.module (global hooks)")
    return run


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")


def _hook_counts(model: Any) -> dict[str, int]:
    return {name or "(model)": sum(len(getattr(m, d, {})) for d in HOOK_DICTS) for name, m in model.named_modules()}


def _global_hooks() -> int:
    from torch.nn.modules import module

    return sum(len(getattr(module, f"_global{d}", {})) for d in HOOK_DICTS)


def reference_seconds(suite: Suite, data: SuiteData, base: Path, seed: int) -> float:
    """Wall time of one epoch of plain SFT on refusals over the defence split at the suite's defence budget:
    the yardstick of the time check."""
    from harness.models.loading import load_causal_lm
    from harness.plugins import TrainingFields
    from harness.training.collate import SFTCollator
    from harness.training.loop import lm_loss, train

    budget = TrainingFields(**{k: v for k, v in suite.defence_defaults.items() if k in TrainingFields.model_fields})
    model, tok = load_causal_lm(base)
    start = time.perf_counter()
    train(model, data.defence, SFTCollator(tok, suite.max_length, loss_on="answer", target="refusal"), lm_loss,
          budget.train_config(), seed=seed)
    return time.perf_counter() - start


def run_checks(plugin: registry.Plugin, cfg: BaseModel, suite: Suite, base: Path, *, seed: int = 0
               ) -> Iterator[Result]:
    """Run the defence twice on the suite's base and yield the run-time checks as they finish."""
    data = suite.data()
    sft = reference_seconds(suite, data, base, seed)
    limit = max(TIME_FLOOR_S, TIME_FACTOR * sft)
    log: list[str] = []
    first = attempt(plugin, cfg, base, view(data, "defence", log), max_length=suite.max_length, seed=seed)
    yield Result("reads no forbidden split", not log, message("defence", log, "the defence") if log else "")
    yield Result("runs", not first.error, first.error)
    if first.error:
        yield from (Result(name, None, "the defence did not return") for name in RUN_CHECKS[2:])
        return
    yield architecture(first)
    yield saves_and_loads(first, base)
    second = attempt(plugin, cfg, base, view(data, "defence", log), max_length=suite.max_length, seed=seed)
    yield deterministic(first, second)
    yield Result("no hooks left", not first.hooks_left,
                 f"hooks remain on {', '.join(first.hooks_left[:3])}" if first.hooks_left else "")
    yield Result("within time budget", first.seconds <= limit,
                 f"{first.seconds:.1f} s (limit {limit:.0f} s: the larger of {TIME_FLOOR_S:.0f} s and "
                 f"{TIME_FACTOR:.0f} x {sft:.1f} s of plain SFT over the same split)")


def _shapes(model: Any) -> dict[str, tuple[Any, Any]]:
    """Name -> (shape, dtype) of every tensor a checkpoint would hold."""
    return {n: (tuple(t.shape), t.dtype) for n, t in model.state_dict().items()}


def architecture(run: Attempt) -> Result:
    """The attack and the evaluation load the defended model as the base's architecture: same class, same
    tensors (names, shapes, dtypes)."""
    if run.result is None:
        return Result("same architecture", True, "returned None: the input model, unchanged")
    got, want = run.result, run.model
    if type(got) is not type(want):
        return Result("same architecture", False, f"returned {type(got).__name__}, input was {type(want).__name__}")
    diff = sorted(set(_shapes(got).items()) ^ set(_shapes(want).items()))
    if diff:
        return Result("same architecture", False, f"parameters differ in name, shape or dtype: {diff[0][0]}")
    return Result("same architecture", True)


def saves_and_loads(run: Attempt, base: Path) -> Result:
    """The pipeline stores the defended model as a checkpoint and every later stage loads it back."""
    import torch

    from harness.models.loading import load_causal_lm, load_tokenizer, save_checkpoint

    with tempfile.TemporaryDirectory(prefix="harness-check-") as tmp:
        try:
            save_checkpoint(run.output, load_tokenizer(base), Path(tmp))
            loaded, _ = load_causal_lm(Path(tmp))
        except Exception as exc:  # any failure to round-trip is the finding
            return Result("saves and loads", False, f"{type(exc).__name__}: {_first_line(exc)}")
        want, got = run.output.state_dict(), loaded.state_dict()
        bad = [k for k in want if k not in got or not torch.equal(want[k].cpu(), got[k].cpu())]
    return Result("saves and loads", not bad, f"tensor(s) differ after loading: {', '.join(bad[:3])}" if bad else "")


def deterministic(a: Attempt, b: Attempt) -> Result:
    """A cached defended model stands for every re-run of its spec: the same seed must give the same weights."""
    import torch

    name = "same seed, same weights"
    if b.error:
        return Result(name, False, f"the second run failed: {b.error}")
    if (a.result is None) != (b.result is None):
        return Result(name, False, "one run returned None and the other a model")
    sa, sb = a.output.state_dict(), b.output.state_dict()
    bad = [k for k in sa if not torch.equal(sa[k], sb[k])]
    return Result(name, not bad, f"tensor(s) differ: {', '.join(bad[:3])} (seed from ctx.seed)" if bad else "")


# ----------------------------------------------------------------------------- the command
def check(name: str, *, suite_name: str, sets: list[str], home: Path | None, seed: int = 0) -> Iterator[Result]:
    """Every check of defence `name` on the suite's check configuration (`Suite.check_params`: the tiny
    suite's smoke size), in order. Bad input (unknown name, bad --set, a suite without a check
    configuration) raises HarnessError before the first result, so the CLI prints one line and exits 2
    before any work.

    The store: `home`, else $HARNESS_HOME, else a temporary one (the smoke suite builds in about a minute)."""
    import os

    from harness.errors import HarnessError, PluginLoadError
    from harness.resolve import load_suite
    from harness.specs import deep_merge, parse_overrides, validate_config

    overrides = parse_overrides(sets)
    other = sorted(t for t, v in overrides.items() if v and t != "defence")
    if other:
        raise HarnessError(f"plugins check takes only defence.FIELD=VALUE overrides (it runs the suite's check "
                           f"configuration); got {', '.join(other)}")
    _, full = load_suite(suite_name, {})
    if full.check_params is None:
        raise HarnessError(f"suite '{suite_name}' declares no check configuration (Suite.check_params)")
    _, suite = load_suite(suite_name, dict(full.check_params))
    try:
        plugin = registry.get("defence", name)  # an unknown name raises UnknownNameError: bad input
    except PluginLoadError as exc:
        yield Result("loads", False, str(exc))
        return
    values = suite.defaults_for("defence", name, plugin.config.model_fields)
    if overrides["defence"]:
        values = deep_merge(values, overrides["defence"])
        validate_config(f"defence '{name}'", plugin.config, values, prefix="defence.")
    yield Result("loads", True)
    yield from info(plugin, suite)
    static = config_checks(plugin, values)
    yield from static
    if static[0].ok is not True:
        yield from (Result(n, None, "no valid Config to run with") for n in RUN_CHECKS)
        return
    cfg = plugin.config.model_validate(values)
    with tempfile.TemporaryDirectory(prefix="harness-check-home-") as tmp:
        root = home or (None if "HARNESS_HOME" in os.environ else Path(tmp))
        if root == Path(tmp):
            yield Result("", None, f"store: a temporary one, deleted afterwards ({tmp}); --home DIR keeps the "
                                   "suite's build for the next check")
        yield from _run_on_suite(plugin, cfg, suite, root, seed)


def _run_on_suite(plugin: registry.Plugin, cfg: BaseModel, suite: Suite, home: Path | None, seed: int
                  ) -> Iterator[Result]:
    from harness.store.artifacts import Store, resolve_ref

    store = Store(home)
    suite.prepare(store, False)
    yield from run_checks(plugin, cfg, suite, Path(resolve_ref(suite.model.id, store)), seed=seed)
