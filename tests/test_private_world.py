"""A private evaluation world (tasks/tiny/private_world.py): built from a secret given at evaluation time,
recorded only as its digest, refused without the secret, and marked verified on the leaderboard."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from harness.errors import ConfigError, HarnessError
from harness.specs import canonical_json
from leaderboard.board import Board
from tasks.tiny.private_world import ENV, checked_seed, digest, world_seed
from tasks.tiny.suite import Config, build_key

SECRET = "round-7-secret-never-committed"


def test_public_seeds_are_unchanged_and_bad_seeds_refused(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert checked_seed(3) == 3 and world_seed(3) == 3
    assert Config().model_dump() == {"size": "default", "seed": 0, "split": "test"}  # committed run ids hold
    for bad in (True, -1, 2**63, "1", "private:xyz", "public"):
        with pytest.raises(ValueError):
            checked_seed(bad)
    with pytest.raises(ValueError, match=ENV):
        checked_seed("private")  # no secret: one line, before any work


def test_the_secret_becomes_a_digest_and_only_that_secret_rebuilds_the_world(monkeypatch):
    monkeypatch.setenv(ENV, SECRET)
    cfg = Config(seed="private", size="smoke")
    assert cfg.seed == digest(SECRET) and cfg.seed.startswith("private:")
    assert SECRET not in canonical_json(cfg.model_dump()) and SECRET not in build_key(cfg)
    assert Config(seed=cfg.seed).seed == cfg.seed  # a record's digest reads back as itself
    seed = world_seed(cfg.seed)
    assert str(seed) not in canonical_json(cfg.model_dump())  # neither the secret nor the seed it gives
    monkeypatch.setenv(ENV, "another secret")
    with pytest.raises(ConfigError, match="does not hash"):
        world_seed(cfg.seed)


def test_a_private_world_holds_other_facts_than_the_public_one(monkeypatch):
    from harness import registry

    monkeypatch.setenv(ENV, SECRET)
    task = registry.get("task", "tiny-harmful-qa")
    public = task.fn(task.config(seed=0, size="smoke"))["harmful_eval"]
    private = task.fn(task.config(seed=world_seed(digest(SECRET)), size="smoke"))["harmful_eval"]
    assert set(public["response"]) != set(private["response"])


def test_a_run_spec_names_the_digest_never_the_secret(monkeypatch):
    from harness.resolve import resolve

    monkeypatch.setenv(ENV, SECRET)
    private = resolve("tiny", "none", "sft-250", sets=["suite.size=smoke", "suite.seed=private"])
    public = resolve("tiny", "none", "sft-250", sets=["suite.size=smoke"])
    text = canonical_json(private.spec.model_dump(mode="json"))
    assert digest(SECRET) in text and SECRET not in text
    assert private.spec.run_id != public.spec.run_id
    assert json.loads(text)["judges"][0]["params"]["seed"] == digest(SECRET)  # the content judge too
    monkeypatch.delenv(ENV)
    with pytest.raises(HarnessError, match=ENV):
        resolve("tiny", "none", "sft-250", sets=["suite.size=smoke", "suite.seed=private"])


def test_the_leaderboard_marks_private_worlds_as_verified():
    private = SimpleNamespace(suite_params=json.dumps({"seed": digest(SECRET), "size": "default"}))
    public = SimpleNamespace(suite_params=json.dumps({"seed": 0, "size": "default"}))
    assert Board.private_world.fget(private) == digest(SECRET)
    assert Board.private_world.fget(public) is None
