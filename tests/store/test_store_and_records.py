"""Artifact store atomicity and run-record validation: nothing torn is ever read, nothing written is lost."""

import json

import pytest

from harness.errors import CorruptRecordError, HarnessError
from harness.results.records import find_record, read_record
from harness.store.artifacts import Store, atomic_write_text, resolve_ref


def test_store_writes_atomically(tmp_path):
    store = Store(tmp_path)
    with store.writing("models", "k1", {"a": 1}) as tmp:
        (tmp / "w.bin").write_text("x")
        assert not store.has("models", "k1")  # not visible until complete
    assert store.has("models", "k1") and store.meta("models", "k1") == {"a": 1}
    assert (store.path("models", "k1") / "w.bin").read_text() == "x"


def test_interrupted_write_leaves_nothing(tmp_path):
    store = Store(tmp_path)
    with pytest.raises(KeyboardInterrupt), store.writing("models", "k2", {}) as tmp:
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt
    assert not store.has("models", "k2") and not store.path("models", "k2").exists()
    assert list((tmp_path / "models").iterdir()) == []


def test_existing_artifact_is_kept_unless_forced(tmp_path):
    store = Store(tmp_path)
    for value, force in (("first", False), ("second", False)):
        with store.writing("m", "k", {"v": value}, force=force):
            pass
    assert store.meta("m", "k") == {"v": "first"}
    with store.writing("m", "k", {"v": "forced"}, force=True):
        pass
    assert store.meta("m", "k") == {"v": "forced"}


def test_store_refs_are_machine_independent(tmp_path):
    assert resolve_ref("store:models/abc", Store(tmp_path)) == str(tmp_path / "models" / "abc")
    assert resolve_ref("meta-llama/Llama-2-7b-chat-hf", Store(tmp_path)) == "meta-llama/Llama-2-7b-chat-hf"


def test_atomic_write_replaces_whole_file(tmp_path):
    path = tmp_path / "r.json"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


@pytest.mark.parametrize("content, match", [('{"run_id": "abc", "spec": {', "not valid JSON"),
                                            ('{"run_id": "abc"}', "invalid record")])
def test_torn_or_invalid_record_is_reported_and_untouched(tmp_path, content, match):
    path = tmp_path / "tiny" / "v1" / "abc.json"
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(CorruptRecordError, match=match):
        read_record(find_record(tmp_path, "abc"))
    assert path.read_text() == content


def test_missing_record_is_a_clear_error(tmp_path):
    with pytest.raises(HarnessError, match="no run 'zzz'"):
        find_record(tmp_path, "zzz")
    json.dumps({})
