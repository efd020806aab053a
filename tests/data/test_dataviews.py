"""Stage data views (harness.data.views): one allow-list decides which splits each stage reads; everything else,
including a field added to SuiteData later, raises and is logged. Every registered defence and attack (and the
example package's defence) is run through the pipeline's stage functions with its entry replaced by a spy (its
process played here, on the splits the stage saves for it), and receives only its splits; the trainability
protocol's attack goes through the same entry. A defence that reads a withheld split in a real `harness run`
fails it with one line, exit 2."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib.util
from pathlib import Path
from typing import Any

import pytest

from harness import registry
from harness.conditions.trainability import TrainabilityProtocol
from harness.data.views import METADATA, STAGE_SPLITS, SplitAccessError, Withheld, call_plugin, view
from harness.errors import HarnessError
from harness.pipeline import CellContext, attack_stage, defend_stage
from harness.plugins import StageContext
from harness.specs import PluginSpec
from harness.stages import Loading
from harness.suite import SuiteData
from harness.training.loop import TrainConfig
from tests.conftest import REPO, messages
from tests.factories import record
from tests.outside import harness_with, make_distribution

FIELDS = [f.name for f in dataclasses.fields(SuiteData)]
EXAMPLE = REPO / "examples" / "weight-noise" / "weight_noise.py"


def _rows(name: str, n: int = 6) -> Any:
    from datasets import Dataset

    return Dataset.from_list([{"prompt": f"{name} question {i}", "response": f"{name} answer {i}", "category": "c"}
                              for i in range(n)])


def _data(cls: type = SuiteData, **extra: Any) -> Any:
    """Every split a distinct dataset; `other` and `evidence` filled too."""
    splits = {name: _rows(name) for name in FIELDS if name not in ("other", "evidence")}
    return cls(**splits, other={"judge_training": _rows("judge")}, evidence={"rows_read": 42}, **extra)


def _assert_view(got: Any, full: Any, stage: str, copied: bool = False, reads: tuple[str, ...] = ()) -> None:
    """`got` holds exactly the stage's splits (the very objects of `full`; with `copied`, equal rows: what a
    plugin's process loads from the stage's copy) and the evidence; every other field is withheld: any use
    raises, naming the split and the stage."""
    for f in dataclasses.fields(full):
        value = getattr(got, f.name)
        if f.name in STAGE_SPLITS[stage] or f.name in reads or f.name in METADATA:
            if copied:
                assert (value == getattr(full, f.name)) if f.name in METADATA else \
                    (value.to_list() == getattr(full, f.name).to_list()), f.name
            else:
                assert value is getattr(full, f.name), f.name
            continue
        assert isinstance(value, Withheld), f"{stage} sees {f.name}"
        with pytest.raises(SplitAccessError, match=f"the {stage} stage read the '{f.name}' split"):
            len(value)


# ----------------------------------------------------------------------------- the declaration and the view
def test_declaration_is_an_allow_list_of_real_fields():
    assert STAGE_SPLITS == {"defence": ("defence", "retain"), "attack": ("attack",),
                            "trainability_attack": ("attack",),
                            "evaluation": ("eval", "harmless_eval", "eval_visible", "attack", "trainability_train",
                                           "trainability_test")}
    assert all(set(splits) <= set(FIELDS) for splits in STAGE_SPLITS.values())
    assert not any("other" in splits for splits in STAGE_SPLITS.values())
    assert issubclass(SplitAccessError, HarnessError)  # the CLI prints it as one line, exit 2


@pytest.mark.parametrize("stage", list(STAGE_SPLITS))
def test_each_stage_sees_exactly_its_splits(stage):
    full = _data()
    _assert_view(view(full, stage), full, stage)


def test_every_use_of_a_withheld_split_raises_and_is_logged_even_if_caught():
    log: list[str] = []
    data = view(_data(), "defence", log)
    uses = (len, iter, bool, list, lambda s: s[0], lambda s: s["prompt"], lambda s: s.select(range(1)),
            lambda s: s.to_list, lambda s: "x" in s, lambda s: s(), lambda s: setattr(s, "x", 1))
    for use in uses:
        with pytest.raises(SplitAccessError, match="may read only defence and retain"):
            use(data.attack)
    for use in (lambda o: o["judge_training"], lambda o: o.items(), dict, len):  # the mapping of extra splits
        with pytest.raises(SplitAccessError, match="read the 'other' split"):
            use(data.other)
    with contextlib.suppress(Exception):
        data.eval_visible.to_list()
    assert set(log) == {"attack", "other", "eval_visible"}
    assert "eval_visible" in repr(data.eval_visible) and "defence" in repr(data.eval_visible)


def test_copying_or_probing_a_view_reads_nothing():
    log: list[str] = []
    data = view(_data(), "attack", log)
    assert copy.deepcopy(data.eval) is data.eval and copy.copy(data.other) is data.other
    assert not hasattr(data.eval, "__array__") and log == []
    assert data.evidence == {"rows_read": 42}  # build counts, not data: every stage may read them


def test_a_field_added_to_suitedata_later_is_withheld_by_default():
    """A split a suite adds to SuiteData after the declaration was written is seen by no stage until a stage's
    entry names it."""
    grown = dataclasses.make_dataclass("GrownSuiteData", [("base_pretraining", Any, None)], bases=(SuiteData,),
                                    frozen=True)
    full = _data(grown, base_pretraining=_rows("pretraining"))
    for stage in STAGE_SPLITS:
        got = view(full, stage)
        assert type(got) is grown
        _assert_view(got, full, stage)
        with pytest.raises(SplitAccessError, match="read the 'base_pretraining' split"):
            got.base_pretraining[0]


# ----------------------------------------------------------------------------- the one plugin entry
def _plugin(fn: Any, kind: registry.Kind = "defence", name: str = "probe") -> registry.Plugin:
    return registry.Plugin(kind, name, fn, object, "1", "")


def _ctx(data: Any) -> StageContext:
    return StageContext(tokenizer=None, data=data, max_length=32, seed=0)


def test_call_plugin_fails_the_stage_however_the_plugin_handles_the_error():
    def swallows(model, cfg, ctx):
        with contextlib.suppress(Exception):
            ctx.data.eval[0]
        return model

    def rewraps(model, cfg, ctx):
        try:
            len(ctx.data.other)
        except Exception as exc:
            raise RuntimeError("no data") from exc

    def honest(model, cfg, ctx):
        return [len(ctx.data.defence), len(ctx.data.retain), ctx.data.evidence["rows_read"]]

    def broken(model, cfg, ctx):
        raise ValueError("a bug of its own")

    full = _data()
    with pytest.raises(SplitAccessError, match=r"^defence 'probe' read the 'eval' split; the defence stage may read "
                                               r"only defence and retain$"):
        call_plugin("defence", _plugin(swallows), "m", None, _ctx(full))
    with pytest.raises(SplitAccessError, match="attack 'probe' read the 'other' split; the attack stage may read "
                                               "only attack"):
        call_plugin("attack", _plugin(rewraps, "attack"), "m", None, _ctx(full))
    assert call_plugin("defence", _plugin(honest), "m", None, _ctx(full)) == [6, 6, 42]
    with pytest.raises(ValueError, match="a bug of its own"):
        call_plugin("defence", _plugin(broken), "m", None, _ctx(full))


# ----------------------------------------------------------------------------- every plugin, through the pipeline
class FakeStages:
    """Enough of `Stages` for the defend and attack stage functions: every stage builds, loading is a no-op."""

    def __init__(self, root: Path):
        self.root = root
        self.store = type("Store", (), {"root": root / "store"})()
        self.loading = Loading()
        self.inputs: dict[str, dict[str, Any]] = {}  # each stage's cache key inputs

    def cached(self, name: str, kind: str, inputs: dict[str, Any], build: Any) -> str:
        self.inputs[name] = inputs
        tmp = self.root / name
        tmp.mkdir(exist_ok=True)
        build(tmp)
        return name

    def adapter(self, ref: str) -> None:
        return None

    def service_adapter(self, key: str) -> None:
        return None

    def model_path(self, ref: str) -> Path:
        return self.root / ref

    def model_ref(self, key: str) -> str:
        return key


@pytest.fixture(autouse=True)
def in_process(monkeypatch):
    """The plugin process, played in this process: its data are what the stage saves for it (`materialise`),
    loaded and viewed as the worker does; the plugin is called on them, and the outcome read as the stage reads
    a real one."""
    from harness.sandbox import launch
    from harness.sandbox.guard import Policy
    from harness.sandbox.worker import Request, Response, load_data

    def run_plugin(kind, name, params, plan, ctx, *, out, store_root, progress=None, curve=False, **_kw):
        work = out.parent / f"work-{kind}"
        plugin = registry.get(kind, name)
        request = Request(kind=kind, name=name, params=params, model=plan, seed=ctx.seed, rng_seed=ctx.seed,
                          splits=launch.materialise(ctx.data, kind, work / "data", plugin.reads),
                          evidence=dict(ctx.data.evidence), max_length=ctx.max_length, template=ctx.template,
                          out=str(out), work=str(work), policy=Policy())
        log: list[str] = []
        data = view(load_data(request), kind, log, plugin.reads)
        context = dataclasses.replace(ctx, tokenizer="tokenizer", data=data)
        plugin.fn(f"model:{plan.path}", plugin.config.model_validate(params), context)
        return launch.Outcome(f"{kind} '{name}'", kind, Response(result="unchanged", withheld=log), work, 0)

    monkeypatch.setattr(launch, "run_plugin", run_plugin)


def _spy(monkeypatch: pytest.MonkeyPatch, kind: registry.Kind, name: str) -> list[StageContext]:
    """Replace the plugin's entry by one that records the context it is given and changes nothing."""
    seen: list[StageContext] = []
    plugin = registry.get(kind, name)

    def spy(model: Any, cfg: Any, ctx: StageContext) -> None:
        assert isinstance(cfg, plugin.config)
        seen.append(ctx)

    monkeypatch.setitem(registry._registry[kind], name, dataclasses.replace(plugin, fn=spy))
    return seen


def _cell(tmp_path: Path, defence: str, attack: str) -> CellContext:
    from harness.models.plugin_inputs import declared_checkpoints

    named = {field: {"id": "org/released"} for field in declared_checkpoints(registry.get("defence", defence).config)}
    spec = record(defence=defence, params=named).spec  # (the checkpoints a config names: not read by the spy)
    spec = spec.model_copy(update={"attack": PluginSpec(name=attack, version="1", params={})})
    full = _data()
    return CellContext(spec, None, FakeStages(tmp_path), full, None, _ctx(full), None, None)  # type: ignore[arg-type]


@pytest.fixture
def example_defence(monkeypatch):
    """The example package's defence, registered from its source file (the registry is restored after)."""
    monkeypatch.setitem(registry._registry, "defence", dict(registry._registry["defence"]))
    spec = importlib.util.spec_from_file_location("weight_noise", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return "weight-noise"


@pytest.mark.parametrize("name", [*registry.names("defence"), "example"])
def test_every_defence_gets_only_the_defence_view(name, monkeypatch, tmp_path, request):
    if name == "example":
        name = request.getfixturevalue("example_defence")
    seen = _spy(monkeypatch, "defence", name)
    cell = _cell(tmp_path, name, "sft-250")
    assert defend_stage(cell) == "defend"
    (ctx,) = seen
    assert ctx.tokenizer == "tokenizer" and ctx.seed == cell.spec.seed
    _assert_view(ctx.data, cell.data, "defence", copied=True)


@pytest.mark.parametrize("name", registry.names("attack"))
def test_every_attack_gets_only_the_attack_view(name, monkeypatch, tmp_path):
    seen = _spy(monkeypatch, "attack", name)
    cell = _cell(tmp_path, "none", name)
    assert attack_stage(cell, "defended") == "attack"
    (ctx,) = seen
    assert ctx.seed == cell.spec.attack_seed_used
    _assert_view(ctx.data, cell.data, "attack", copied=True, reads=registry.get("attack", name).reads)


def test_an_attack_that_declares_harmless_data_gets_it_and_nothing_more(monkeypatch, tmp_path):
    """`reads=("retain",)`: the attack stage (and the trainability protocol's attack) add the retain split to the
    attack's view, and the attack stage's cache key names it; anything else stays withheld."""
    plugin = registry.get("attack", "sft-250")
    monkeypatch.setitem(registry._registry["attack"], "sft-250", dataclasses.replace(plugin, reads=("retain",)))
    seen = _spy(monkeypatch, "attack", "sft-250")
    cell = _cell(tmp_path, "none", "sft-250")
    assert attack_stage(cell, "defended") == "attack"
    _assert_view(seen[0].data, cell.data, "attack", copied=True, reads=("retain",))
    assert set(cell.stages.inputs["attack"]["reads"]) == {"retain"}
    ctx = _ctx(cell.data)
    call_plugin("trainability_attack", registry.get("attack", "sft-250"), "model", plugin.config(), ctx)
    _assert_view(seen[1].data, cell.data, "trainability_attack", reads=("retain",))


@pytest.mark.parametrize("kind,reads", [("attack", ("eval",)), ("attack", ("other",)), ("defence", ("retain",))])
def test_only_attacks_declare_reads_and_only_harmless_data(kind, reads):
    from harness.errors import PluginLoadError

    with pytest.raises(PluginLoadError, match="only attacks declare reads, from retain"):
        registry.register(kind, "reader", config=registry.get("attack", "sft-250").config, version="1", reads=reads)


def test_a_defence_reading_a_withheld_split_fails_its_stage(monkeypatch, tmp_path):
    def peek(model, cfg, ctx):
        with contextlib.suppress(Exception):
            ctx.data.eval_visible.to_list()

    plugin = registry.get("defence", "none")
    monkeypatch.setitem(registry._registry["defence"], "none", dataclasses.replace(plugin, fn=peek))
    with pytest.raises(SplitAccessError, match=r"^defence 'none' read the 'eval_visible' split"):
        defend_stage(_cell(tmp_path, "none", "sft-250"))


def test_evaluator_and_trainability_attack_see_only_their_views(monkeypatch):
    """The evaluator holds the evaluation's view; the protocol's attack runs through `call_plugin` on the
    trainability attack's view."""
    from harness.evaluation import Evaluator
    from harness.resolve import load_suite

    _, suite = load_suite("tiny", {"size": "smoke"})
    protocol = TrainabilityProtocol(task="t", template="{prompt}", train=TrainConfig(lr=1e-3), max_new_tokens=4,
                                    every=1, then_attack="sft-250")
    suite = dataclasses.replace(suite, trainability=protocol)
    full = _data()
    evaluator = Evaluator(None, record().spec, suite, full)  # type: ignore[arg-type]
    _assert_view(evaluator.data, full, "evaluation")
    seen = _spy(monkeypatch, "attack", "sft-250")
    monkeypatch.setattr(evaluator.versus_base, "harm_now", lambda model, tok: 0.5)
    assert evaluator.versus_base.then_attack("model", "tok") == [0.5, 0.5]
    (ctx,) = seen
    assert ctx.tokenizer == "tok"
    _assert_view(ctx.data, full, "trainability_attack")


# ----------------------------------------------------------------------------- a real run
PEEKING = {"reads-eval-visible": "eval_visible", "peeks-other": "other"}


@pytest.fixture(scope="module")
def peeking(tmp_path_factory):
    """A distribution declaring the defences of tests/fixtures/peeking_defences.py."""
    points = dict.fromkeys(PEEKING, "tests.fixtures.peeking_defences")
    return make_distribution(tmp_path_factory.mktemp("peeking"), "peeking-defences", "0.1", modules={},
                             entry_points={"harness.defences": points})


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PEEKING))
def test_real_run_of_a_peeking_defence_fails_with_one_line(name, peeking, smoke_base, home, tmp_path):
    run = harness_with([peeking], "run", "--defence", name, "--attack", "sft-250", "--set", "suite.size=smoke",
                       "--results-dir", str(tmp_path), home=home)
    assert run.returncode == 2, run.stderr[-3000:]
    said = messages(run.stderr)  # progress lines of the stage it stopped, then one line
    assert run.stdout == "" and len(said) == 1 and said == [run.stderr.splitlines()[-1]], run.stderr[-3000:]
    assert said[0].startswith(f"error: defence '{name}' read the '{PEEKING[name]}' split; the defence stage may "
                                 "read only defence and retain")
    assert not list(tmp_path.rglob("*.json"))  # no record
