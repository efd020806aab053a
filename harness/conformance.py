"""`harness plugins check NAME`: does a defence keep the contract every built-in keeps?

A submitted defence is compared with the others only if it plays by the same rules, so the check runs it
for real, twice, on the smoke-size tiny suite (built in about 1.5 minutes on two CPU cores, or reused from the
store) and reports one line per rule. Each run is a pipeline stage's run: the defence in its own process
(`harness.sandbox`), with only the defence stage's splits and its model, behind the same guard. The check and a
run hand the defence identical inputs built the same way, so a defence that tells them apart gains nothing:
in a run, too, the withheld splits are not in its process at all.

- its Config is valid (strict, defaults validate, the suite's values validate), documented (a
  description on every field) and hashable (frozen, canonical JSON: it enters the run id);
- it declares a version (it enters every cache key and result row);
- it reads no split it must not see: every split but defence and retain is a stand-in that raises, naming the
  split, on any use (and is logged, in case the defence swallows the error);
- it stays in its sandbox: it imports none of the suite's data builders and reads nothing of the store but
  its model, starts no program, opens no connection (`harness.sandbox.guard`);
- it returns a model of the input's class and parameter shapes (or None: unchanged), which saves and loads
  back equal in another process, and whose logits on a probe equal its checkpoint's (its behaviour is its
  weights); two runs with the same seed, in two processes with different hash seeds and global RNG states,
  save equal tensors; it leaves no hook, no patched `forward` and no replaced method on any module or class,
  nor a global hook (`harness.sandbox.inspection`);
- it runs within the smoke budget: at most TIME_FACTOR times the wall time of one epoch of plain SFT on
  refusals over the same defence split at the suite's defence budget, measured on the same machine just
  before (floor: TIME_FLOOR_S seconds), so the limit means the same on a laptop and on a GPU node.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from harness import registry
from harness.data.views import message
from harness.plugins import StageContext
from harness.progress import bar
from harness.sandbox.guard import message as guard_message
from harness.sandbox.launch import Outcome
from harness.sandbox.worker import Response
from harness.specs import stable_hash
from harness.suite import Suite, SuiteData

TIME_FACTOR = 10.0  # RepNoise, the costliest built-in, takes about 3-4x an SFT step (benchmarks/)
TIME_FLOOR_S = 30.0
RUN_CHECKS = ("reads no forbidden split", "stays in its sandbox", "runs", "same architecture", "saves and loads",
              "behaviour is its weights", "same seed, same weights", "no hooks or patches left", "within time budget")


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
        from harness.models.plugin_inputs import declared_checkpoints

        # Every field has a default: a run needs no value the suite cannot give, but a checkpoint the user names.
        required = [n for n, f in cls.model_fields.items() if f.is_required() and n not in declared_checkpoints(cls)]
        if required:
            raise ValueError(f"field(s) {', '.join(required)} have no default: a run needs no value the suite cannot "
                             "give (only a checkpoint the user names, harness.plugins.CheckpointRef, may have none)")
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
    """One run of the defence in its own process (`harness.sandbox`), as a pipeline stage runs it, on a fresh
    copy of the base model; its model saved into `out`."""

    outcome: Outcome
    out: Path

    @property
    def response(self) -> Response:
        return self.outcome.response or Response(error=f"its process exited with code {self.outcome.returncode} "
                                                       f"without a result (log: {self.outcome.work / 'worker.log'})")


def attempt(plugin: registry.Plugin, cfg: BaseModel, base: Path, data: SuiteData, *, suite: Suite, seed: int,
            store_root: Path, out: Path, hash_seed: int) -> Attempt:
    """Run the defence once in its own process with hash seed `hash_seed` (the global RNGs seeded apart too)."""
    from harness.sandbox.launch import run_plugin
    from harness.sandbox.worker import ModelPlan

    ctx = StageContext(tokenizer=None, data=data, max_length=suite.max_length, seed=seed, template=suite.prompt)
    with bar(f"check {plugin.name}: run {hash_seed} of 2", None) as advance:  # the plugin's loop gives the total
        outcome = run_plugin("defence", plugin.name, cfg.model_dump(mode="json"), ModelPlan(path=str(base)), ctx,
                             out=out, store_root=store_root, check=True, hash_seed=hash_seed, progress=advance)
    return Attempt(outcome, out)


_YARDSTICKS: dict[str, float] = {}  # measured once per process: checks of several defences share it


def reference_seconds(suite: Suite, data: SuiteData, base: Path, seed: int) -> float:
    """Wall time of one epoch of plain SFT on refusals over the defence split at the suite's defence budget:
    the yardstick of the time check (measured once per suite, base and seed in a process)."""
    key = stable_hash([suite.name, repr(suite.defence_defaults), suite.max_length, str(base), seed])
    if key not in _YARDSTICKS:
        _YARDSTICKS[key] = _sft_seconds(suite, data, base, seed)
    return _YARDSTICKS[key]


def _sft_seconds(suite: Suite, data: SuiteData, base: Path, seed: int) -> float:
    from harness.models.loading import load_causal_lm
    from harness.plugins import TrainingFields
    from harness.training.collate import SFTCollator
    from harness.training.loop import lm_loss, train

    budget = TrainingFields(**{k: v for k, v in suite.defence_defaults.items() if k in TrainingFields.model_fields})
    model, tok = load_causal_lm(base)
    start = time.perf_counter()
    with bar("check: the time yardstick (an epoch of SFT on refusals)", None) as advance:
        train(model, data.defence, SFTCollator(tok, suite.max_length, loss_on="answer", target="refusal"), lm_loss,
              budget.train_config(), seed=seed, progress=advance)
    return time.perf_counter() - start


def run_checks(plugin: registry.Plugin, cfg: BaseModel, suite: Suite, base: Path, *, store_root: Path,
               seed: int = 0) -> Iterator[Result]:
    """Run the defence twice, each time in its own process with another hash seed, on the suite's base and yield
    the run-time checks as they finish."""
    data = suite.data()
    sft = reference_seconds(suite, data, base, seed)
    limit = max(TIME_FLOOR_S, TIME_FACTOR * sft)
    with tempfile.TemporaryDirectory(prefix="harness-check-") as tmp:
        runs = [lambda i=i: attempt(plugin, cfg, base, data, suite=suite, seed=seed, store_root=store_root,
                                    out=Path(tmp) / f"run{i}", hash_seed=i) for i in (1, 2)]
        first = runs[0]()
        try:
            yield from _checks(first, runs[1], base, limit, sft)
        finally:
            first.outcome.cleanup()


def _checks(first: Attempt, second_run: Any, base: Path, limit: float, sft: float) -> Iterator[Result]:
    resp = first.response
    yield Result("reads no forbidden split", not resp.withheld,
                 message("defence", resp.withheld, "the defence") if resp.withheld else "")
    yield Result("stays in its sandbox", not resp.violations,
                 guard_message("the defence", resp.violations[0]) if resp.violations else "")
    yield Result("runs", not resp.error, resp.error.splitlines()[0] if resp.error else "")
    if resp.error:
        yield from (Result(name, None, "the defence did not return") for name in RUN_CHECKS[3:])
        return
    yield Result("same architecture", not resp.architecture, resp.architecture or (
        "returned None: the input model, unchanged" if resp.result == "unchanged" else ""))
    yield from saves_and_loads(first, base)
    second = second_run()
    try:
        yield deterministic(first, second)
    finally:
        second.outcome.cleanup()
    yield Result("no hooks or patches left", not resp.changes, "changed: " + "; ".join(resp.changes[:3]) +
                 (f" (and {len(resp.changes) - 3} more)" if len(resp.changes) > 3 else "") if resp.changes else "")
    yield Result("within time budget", resp.seconds <= limit,
                 f"{resp.seconds:.1f} s (limit {limit:.0f} s: the larger of {TIME_FLOOR_S:.0f} s and "
                 f"{TIME_FACTOR:.0f} x {sft:.1f} s of plain SFT over the same split)")


def load_output(run: Attempt, base: Path) -> Any:
    """The defended model as the next stage loads it: the base (unchanged), the saved checkpoint, or the base
    with the saved adapter merged."""
    from harness.models.loading import load_causal_lm

    resp = run.response
    if resp.result == "model":
        return load_causal_lm(run.out, resp.dtype or "float32")[0]
    model = load_causal_lm(base, resp.dtype or "float32")[0]
    if resp.result == "adapter":
        from harness.training.lora import load_adapter_model

        model = load_adapter_model(model, run.out, merge=True)
    return model


def saves_and_loads(run: Attempt, base: Path) -> Iterator[Result]:
    """The pipeline stores the defended model and every later stage loads it back in a fresh process: what
    loads must be the model the defence left (every tensor), and behave like it (its logits on a probe, which a
    hook or a patched forward would change)."""
    import torch

    from harness.sandbox.inspection import digests, probe_logits

    resp = run.response
    try:
        if resp.save_error:
            raise RuntimeError(resp.save_error)
        loaded = load_output(run, base)
    except Exception as exc:  # any failure to round-trip is the finding
        yield Result("saves and loads", False, f"{type(exc).__name__}: {_first_line(exc)}")
        yield Result("behaviour is its weights", None, "nothing loaded")
        return
    got = digests(loaded)
    bad = [k for k, v in resp.digests.items() if got.get(k) != v]
    yield Result("saves and loads", not bad, f"tensor(s) differ after loading: {', '.join(bad[:3])}"
                 + (" (the defence returned None but changed the model in place)" if resp.result == "unchanged"
                    else "") if bad else "")
    want, mine = torch.load(run.outcome.work / "probe.pt", weights_only=True), probe_logits(loaded)
    gap = float((want - mine).abs().max()) if want.shape == mine.shape else float("inf")
    ok = gap <= 1e-4 * (1.0 + float(want.abs().max()))
    yield Result("behaviour is its weights", ok, "" if ok else
                 f"the returned model's logits differ from its checkpoint's by up to {gap:.3g}: something besides "
                 "its weights (a hook, a patched forward) changes what it computes")


def deterministic(a: Attempt, b: Attempt) -> Result:
    """A cached defended model stands for every re-run of its spec, in any process: two runs with the same seed,
    in two processes with different hash seeds and global RNG states, must save the same tensors."""
    import torch
    from safetensors.torch import load_file

    name = "same seed, same weights"
    if b.response.error:
        return Result(name, False, f"the second run failed: {b.response.error.splitlines()[0]}")
    if a.response.result != b.response.result:
        return Result(name, False, f"one run returned {a.response.result}, the other {b.response.result}")
    def saved(out: Path) -> list[str]:  # the model's files, and a kept-back service adapter's beside them
        return sorted(str(p.relative_to(out)) for p in out.rglob("*.safetensors"))

    files = saved(a.out)
    if files != saved(b.out):
        return Result(name, False, "the two runs saved different files")
    bad = []
    for file in files:
        ta, tb = load_file(str(a.out / file)), load_file(str(b.out / file))
        bad += [k for k in ta if k not in tb or not torch.equal(ta[k], tb[k])]
    return Result(name, not bad, f"tensor(s) differ: {', '.join(bad[:3])} (seed from ctx.seed; no hash(), no "
                                 "unseeded global RNG)" if bad else "")


# ----------------------------------------------------------------------------- the command
def check(name: str, *, suite_name: str, sets: list[str], home: Path | None, seed: int = 0) -> Iterator[Result]:
    """Every check of defence `name` on the suite's check configuration (`Suite.check_params`: the tiny
    suite's smoke size), in order. Bad input (unknown name, bad --set, a suite without a check
    configuration) raises HarnessError before the first result, so the CLI prints one line and exits 2
    before any work.

    The store: `home`, else $HARNESS_HOME, else a temporary one (the smoke suite builds in about 1.5 minutes on
    two CPU cores)."""
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
    yield from run_checks(plugin, cfg, suite, Path(resolve_ref(suite.model.id, store)), store_root=store.root,
                          seed=seed)
