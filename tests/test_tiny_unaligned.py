"""The tiny world's base before its safety alignment (`Suite.unaligned`): a world's build keeps it as an artifact of
its own; a world built before it did gets it by pre-training alone, once, without touching the build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tasks.tiny.base as tiny_base
import tasks.tiny.world as tiny_world
from harness.registry import get
from harness.store.artifacts import Store
from tasks.tiny.suite import KIND, Config, build_key, prepare, unaligned_key

CFG = Config(size="smoke", seed=3)


@pytest.fixture
def pretraining(monkeypatch):
    """build_base as a recorder: each call's `align` flag; it writes a marker checkpoint where it is told to."""
    calls: list[bool] = []

    def fake_build_base(world, size, seed, out: Path, *, unaligned=None, align=True):
        calls.append(align)
        out.mkdir(parents=True)
        (out / "config.json").write_text(json.dumps({"aligned": align}))
        return {"parameters": 1, "pretrain": {"rows": 1}}

    monkeypatch.setattr(tiny_base, "build_base", fake_build_base)
    monkeypatch.setattr(tiny_world, "cached_world", lambda seed, size: object())
    return calls


def an_older_build(store: Store) -> Path:
    """A world artifact as builds before the unaligned base wrote it: base, judge and report, nothing beside it."""
    with store.writing(KIND, build_key(CFG), {"suite": "tiny"}) as tmp:
        (tmp / "base").mkdir()
        (tmp / "base" / "config.json").write_text("{}")
        (tmp / "report.json").write_text(json.dumps({"base": {"parameters": 1}}))
    return store.path(KIND, build_key(CFG))


def test_an_older_build_gets_its_base_before_alignment_once(tmp_path, pretraining):
    store = Store(tmp_path / "home")
    world = an_older_build(store)
    before = sorted(p.name for p in world.iterdir())
    assert prepare(CFG, store, False) == {"base": {"parameters": 1}}  # the build's own report
    assert pretraining == [False]  # pre-training alone: no alignment
    unaligned = store.path(KIND, unaligned_key(CFG))
    assert store.has(KIND, unaligned_key(CFG))
    assert json.loads((unaligned / "base" / "config.json").read_text()) == {"aligned": False}
    assert sorted(p.name for p in world.iterdir()) == before  # the world's build is untouched
    prepare(CFG, store, False)
    assert pretraining == [False]  # cached


def test_the_suite_names_it_beside_the_aligned_base():
    suite = get("suite", "tiny").fn(CFG)
    assert suite.unaligned is not None and suite.unaligned.id == f"store:{KIND}/{unaligned_key(CFG)}/base"
    assert suite.model.id == f"store:{KIND}/{build_key(CFG)}/base"
    assert unaligned_key(CFG) != build_key(CFG)
    # the other split is the same build, so the same two models
    assert get("suite", "tiny").fn(CFG.model_copy(update={"split": "validation"})).unaligned == suite.unaligned


def test_only_a_run_on_the_suites_own_base_is_measured_against_its_unaligned_base(tmp_path):
    """Another `--model` has its own pre-alignment checkpoint, which the suite does not know: no scale for it. A
    suite's unaligned base that does not load fails the run in its checks, before any stage."""
    import dataclasses

    from harness.errors import HarnessError
    from harness.preflight import check_unaligned
    from harness.specs import ModelSpec
    from tests.factories import MODEL, record

    spec = record("none").spec  # its base: tests.factories.MODEL
    missing = ModelSpec(id=str(tmp_path / "no-such-checkpoint"), revision="x")
    suite = dataclasses.replace(get("suite", "tiny").fn(CFG), model=MODEL, unaligned=missing)
    assert suite.unaligned_for(spec.model) == missing
    other = spec.model.model_copy(update={"id": "org/another-model"})
    assert suite.unaligned_for(other) is None
    with pytest.raises(HarnessError, match="its base before alignment: "):
        check_unaligned(spec, suite)
    check_unaligned(spec.model_copy(update={"model": other}), suite)  # another base: nothing to check
    tiny = get("suite", "tiny").fn(CFG)  # its unaligned base is built by its prepare step: nothing to check here
    check_unaligned(spec.model_copy(update={"model": tiny.model}), tiny)
