"""A store knows it is a store: the deleting commands (`store gc --yes`, `store verify --delete`) refuse a folder
without the store's marker and only ever delete artifacts the store wrote (never through a link, never a results
folder, never anything else under the root); stage writes never follow a linked kind folder out of the store; gc
refuses to run while a record cannot be read; a full disk is one line naming the stage. Fast: fake artifacts
written through the Store API, the CLI in-process."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import DiskFullError, HarnessError
from harness.preflight import start
from harness.stages import MODELS, SCORES, Stages
from harness.store.artifacts import JOURNAL, Store
from harness.store.gc import garbage, verify
from harness.store.layout import FORMAT, MARKER, read_marker
from tests.cli.test_bad_inputs import snapshot

OLD, NEEDED = "0123456789abcdef", "fedcba9876543210"  # artifact keys (16 hex: what records name)


def make(store: Store, kind: str = SCORES, key: str = OLD, payload: bytes = b"x" * 100) -> Path:
    with store.writing(kind, key, {"stage": "fake"}) as tmp:
        (tmp / "data.bin").write_bytes(payload)
    return store.path(kind, key)


def record(folder: Path, *keys: str, name: str = "aaaaaaaaaaaaaaaa") -> Path:
    path = folder / "tiny" / "v1" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"suite": "tiny", "provenance": {"stages": {f"s{i}": {"key": k}
                                                                           for i, k in enumerate(keys)}}}))
    return path


def cli(capfd, *argv: str) -> tuple[int, str, str]:
    """`harness ARGV` in-process: (exit code, stdout, stderr)."""
    capfd.readouterr()
    try:
        main(list(argv))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capfd.readouterr()
    return code, out, err


def one_error_line(err: str, *parts: str) -> None:
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for part in parts:
        assert part in lines[0], err


@pytest.fixture
def fake_home(tmp_path) -> Path:
    """A user's home directory: a checkout and a thesis, nothing the harness wrote."""
    home = tmp_path / "home"
    for rel, text in {"projects/myrepo/README.md": "# my repo", "projects/myrepo/.git/HEAD": "ref: main",
                      "Documents/thesis/thesis.tex": "\\section{x}", "Documents/thesis/meta.json": "{}"}.items():
        (home / rel).parent.mkdir(parents=True, exist_ok=True)
        (home / rel).write_text(text)
    (tmp_path / "results").mkdir()
    return home


def test_deleting_commands_refuse_a_folder_that_is_no_store(fake_home, tmp_path, capfd):
    before = snapshot(tmp_path)
    code, out, err = cli(capfd, "store", "gc", "--yes", "--min-age-hours", "0", "--home", str(fake_home),
                         "--results-dir", str(tmp_path / "results"))
    assert code == 2 and out == ""
    one_error_line(err, "store gc --yes", str(fake_home), "is not marked as an artifact store", "nothing deleted")
    code, out, err = cli(capfd, "store", "verify", "--delete", "--home", str(fake_home))
    assert code == 2 and out == ""
    one_error_line(err, "store verify --delete", "is not marked as an artifact store")
    code, _, err = cli(capfd, "store", "init", "--home", str(fake_home))  # nor can it be marked by mistake
    assert code == 2
    one_error_line(err, "does not look like an artifact store")
    assert snapshot(tmp_path) == before


def test_even_a_marked_folder_loses_nothing_but_the_store_s_own_artifacts(fake_home, tmp_path, capfd):
    store = Store(fake_home)
    make(store)  # the harness writes here: the folder becomes a store (marker), with one unneeded artifact
    os.utime(store.path(SCORES, OLD), (0, 0))
    (fake_home / MODELS / "notes").mkdir(parents=True)  # a user's folder in a kind folder: no meta.json
    (fake_home / MODELS / "notes" / "todo.txt").write_text("keep me")
    assert read_marker(fake_home)["format"] == FORMAT
    code, out, _ = cli(capfd, "store", "verify", "--delete", "--home", str(fake_home))
    assert code == 1 and f"damaged {MODELS}/notes: meta.json is missing; left in place (no meta.json" in out
    code, out, _ = cli(capfd, "store", "gc", "--yes", "--min-age-hours", "0", "--home", str(fake_home),
                       "--results-dir", str(tmp_path / "results"))
    assert code == 0 and out.splitlines()[0].startswith(f"deleted {SCORES}/{OLD} (")
    assert not store.path(SCORES, OLD).exists()
    for rel in ("projects/myrepo/README.md", "projects/myrepo/.git/HEAD", "Documents/thesis/thesis.tex",
                "Documents/thesis/meta.json", f"{MODELS}/notes/todo.txt"):
        assert (fake_home / rel).is_file(), rel


def test_a_results_folder_inside_the_store_is_never_garbage(tmp_path, capfd):
    store = Store(tmp_path / "store")
    make(store, key=OLD)
    make(store, key=NEEDED)
    for key in (OLD, NEEDED):
        os.utime(store.path(SCORES, key), (0, 0))
    results = store.root / "results"
    rec = record(results, NEEDED)
    os.utime(rec.parent, (0, 0))
    assert [art for art, _ in garbage(store, [results], min_age_hours=0).garbage] == [(SCORES, OLD)]
    code, out, _ = cli(capfd, "store", "gc", "--home", str(store.root), "--results-dir", str(results),
                       "--min-age-hours", "0")
    assert code == 0 and f"would delete {SCORES}/{OLD}" in out and "results" not in out.splitlines()[0]
    code, out, _ = cli(capfd, "store", "gc", "--yes", "--home", str(store.root), "--results-dir", str(results),
                       "--min-age-hours", "0")
    assert code == 0 and rec.is_file() and store.has(SCORES, NEEDED) and not store.path(SCORES, OLD).exists()


def test_a_linked_kind_folder_is_neither_written_nor_deleted_through(tmp_path, capfd):
    elsewhere = tmp_path / "elsewhere"  # looks like a kind folder with an artifact, outside the store
    (elsewhere / OLD).mkdir(parents=True)
    (elsewhere / OLD / "meta.json").write_text("{}")
    (elsewhere / "precious.txt").write_text("not the store's")
    store = Store(tmp_path / "store")
    make(store, kind=SCORES, key=NEEDED)
    (store.root / MODELS).symlink_to(elsewhere, target_is_directory=True)
    before = snapshot(elsewhere)
    with pytest.raises(HarnessError, match=r"is a link to .*elsewhere.*replace the link with a folder"):
        make(store, kind=MODELS, key=NEEDED)
    with pytest.raises(HarnessError, match="is a link"):  # a run's start refuses it before any stage
        start(Store(store.root))
    assert (MODELS, OLD) not in set(store.artifacts())
    (tmp_path / "results").mkdir()
    code, out, _ = cli(capfd, "store", "gc", "--yes", "--min-age-hours", "0", "--home", str(store.root),
                       "--results-dir", str(tmp_path / "results"))
    assert code == 0 and f"skipped {store.root / MODELS}: a link" in out and f"{MODELS}/{OLD}" not in out
    code, out, _ = cli(capfd, "store", "verify", "--delete", "--home", str(store.root))
    assert code == 0 and f"{MODELS}/" not in out.replace(f"skipped {store.root / MODELS}", "")
    with pytest.raises(HarnessError, match="is a link"):
        store.delete(MODELS, OLD)
    assert snapshot(elsewhere) == before


def test_a_linked_locks_folder_is_refused_at_a_run_s_start(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    store = Store(tmp_path / "store")
    make(store)
    os.rename(store.root / ".locks", tmp_path / "elsewhere" / "locks")
    (store.root / ".locks").symlink_to(tmp_path / "elsewhere" / "locks", target_is_directory=True)
    with pytest.raises(HarnessError, match=r"\.locks is a link"):
        start(Store(store.root))


def test_a_linked_artifact_folder_is_not_the_store_s(tmp_path, capfd):
    target = tmp_path / "target"
    target.mkdir()
    (target / "meta.json").write_text("{}")
    store = Store(tmp_path / "store")
    make(store)
    (store.root / SCORES / NEEDED).symlink_to(target, target_is_directory=True)
    assert list(store.artifacts()) == [(SCORES, OLD)] and not store.owned(SCORES, NEEDED)
    assert not store.delete(SCORES, NEEDED) and (target / "meta.json").is_file()


def test_a_run_writing_through_a_linked_kind_folder_is_one_line_before_work(tmp_path, capfd):
    store = Store(tmp_path / "store")
    make(store, kind=SCORES, key=NEEDED)
    (tmp_path / "elsewhere").mkdir()
    (store.root / MODELS).symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    code, _, err = cli(capfd, "run", "--defence", "none", "--attack", "sft-250", "--set", "suite.size=smoke",
                       "--home", str(store.root), "--results-dir", str(tmp_path / "results"))
    assert code == 2
    one_error_line(err, "is a link to")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_torn_record_stops_gc_with_one_line(tmp_path, capfd):
    store = Store(tmp_path / "store")
    make(store, key=NEEDED)
    os.utime(store.path(SCORES, NEEDED), (0, 0))
    results = tmp_path / "results"
    whole = record(results, NEEDED)
    torn = whole.with_name("bbbbbbbbbbbbbbbb.json")
    torn.write_text(whole.read_text()[:40])  # a record cut off mid-write: it names nothing any more
    whole.unlink()
    for argv in ([], ["--yes"]):
        code, out, err = cli(capfd, "store", "gc", *argv, "--min-age-hours", "0", "--home", str(store.root),
                             "--results-dir", str(results))
        assert code == 2 and out == ""
        one_error_line(err, "cannot read 1 file(s)", str(torn), "nothing is collected")
    assert store.has(SCORES, NEEDED)
    code, out, err = cli(capfd, "store", "ls", "--home", str(store.root), "--results-dir", str(results))
    assert code == 0 and f"cannot read {torn}" in err  # ls is read-only: it says so and goes on


def test_the_harness_marks_what_it_creates_and_adopts_older_stores(tmp_path, capfd):
    fresh = tmp_path / "fresh"
    make(Store(fresh))
    assert read_marker(fresh)["format"] == FORMAT and (fresh / MARKER).is_file()
    start(Store(tmp_path / "new"))  # a run's start creates and marks a new store
    assert read_marker(tmp_path / "new") is not None
    unrelated = tmp_path / "unrelated"
    (unrelated / "photos").mkdir(parents=True)
    start(Store(unrelated))  # a run's start marks no folder it did not write
    assert read_marker(unrelated) is None
    old = tmp_path / "old"  # a store written before markers: artifacts, journal
    make(Store(old))
    (old / MARKER).unlink()
    os.utime(Store(old).path(SCORES, OLD), (0, 0))
    (tmp_path / "results").mkdir()
    gc = ["store", "gc", "--yes", "--min-age-hours", "0", "--home", str(old),
          "--results-dir", str(tmp_path / "results")]
    code, _, err = cli(capfd, *gc)
    assert code == 2
    one_error_line(err, f"mark it with `harness store init --home {old}`")
    code, out, _ = cli(capfd, "store", "init", "--home", str(old))
    assert code == 0 and out.strip() == f"marked {old} as an artifact store (format {FORMAT})"
    code, out, _ = cli(capfd, *gc)
    assert code == 0 and out.splitlines()[0].startswith(f"deleted {SCORES}/{OLD} (")
    (old / MARKER).unlink()
    start(Store(old))  # a run adopts it too (its journal says the harness wrote it)
    assert (old / JOURNAL).is_file() and read_marker(old) is not None


def test_a_plugin_kind_is_recorded_and_collected(tmp_path):
    store = Store(tmp_path)
    make(store, kind="my-plugin-cache", key=OLD)
    assert read_marker(tmp_path)["kinds"] == ["my-plugin-cache"]
    assert (("my-plugin-cache", OLD)) in set(Store(tmp_path).artifacts())
    with pytest.raises(HarnessError, match="not an artifact kind"):
        make(store, kind="../outside")


def test_verify_delete_spares_an_artifact_a_writer_holds(tmp_path):
    store = Store(tmp_path)
    folder = make(store)
    (folder / "data.bin").write_bytes(b"y" * 100)  # damaged: same size, other bytes
    with store.lock(SCORES, OLD):  # a `--force` run replacing it right now
        found = list(verify(Store(tmp_path), delete=True))
    assert [(f.status, f.problem) for f in found] == [
        ("damaged", "data.bin does not match its sha256; left in place (a run holds its lock)")]
    assert folder.is_dir()
    assert [f.status for f in verify(Store(tmp_path), delete=True)] == ["deleted"] and not folder.exists()


def _fill_disk(_tmp: Path) -> None:
    raise OSError(errno.ENOSPC, "No space left on device")


def _safetensors_full(_tmp: Path) -> None:
    from safetensors import SafetensorError

    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                          '"No space left on device" })')


@pytest.mark.parametrize("build", [_fill_disk, _safetensors_full], ids=["oserror", "safetensors"])
def test_a_full_disk_names_the_stage_and_leaves_the_store_consistent(tmp_path, build):
    store = Store(tmp_path)
    with pytest.raises(DiskFullError) as exc:
        Stages(store).cached("attack", MODELS, {"x": 1}, build)
    assert str(exc.value).startswith("no space left on device while writing attack to ")
    assert str(exc.value).endswith("; free space and rerun to resume")
    assert list(store.artifacts()) == [] and list((tmp_path / MODELS).iterdir()) == []  # temp folder removed


def test_a_full_disk_in_a_run_is_one_line_and_exit_1(tmp_path, capfd, monkeypatch):
    import harness.pipeline

    def run(spec, suite, overrides, *, store, results_dir, force=False):  # the first stage hits a full disk
        Stages(store).cached("defend", MODELS, {"spec": spec.run_id}, _fill_disk)

    monkeypatch.setattr(harness.pipeline, "run", run)
    code, _, err = cli(capfd, "run", "--defence", "none", "--attack", "sft-250", "--set", "suite.size=smoke",
                       "--home", str(tmp_path / "store"), "--results-dir", str(tmp_path / "results"))
    assert code == 1
    one_error_line(err, "error: no space left on device while writing defend to ", str(tmp_path / "store" / MODELS),
                   "free space and rerun to resume")
    assert list(Store(tmp_path / "store").artifacts()) == []


def test_gc_says_why_it_keeps_what_it_keeps(tmp_path, capfd):
    """`store ls` lists artifacts no record needs; gc's dry run names the minimum age that keeps the young ones."""
    store = Store(tmp_path / "store")
    young = "00000000000000aa"
    for key in (OLD, NEEDED, young):
        make(store, key=key)
    for key in (OLD, NEEDED):
        os.utime(store.path(SCORES, key), (0, 0))
    results = tmp_path / "results"
    record(results, NEEDED)
    code, out, _ = cli(capfd, "store", "gc", "--home", str(store.root), "--results-dir", str(results))
    *listed, last = out.splitlines()
    assert code == 0 and [line.split(" (")[0] for line in listed] == [f"would delete {SCORES}/{OLD}"]
    assert re.match(r"dry run: would delete 1 artifact\(s\), \d+ B; kept 2:", last)
    assert last.split("B; ", 1)[1].startswith("kept 2: 1 needed by the records, 1 younger "
                           "than 24 h (--min-age-hours;") and str(results) in last
    code, out, _ = cli(capfd, "store", "gc", "--home", str(store.root), "--results-dir", str(results),
                       "--min-age-hours", "0")
    assert code == 0 and "would delete 2 artifact(s)" in out and "kept 1: 1 needed by the records, 0 younger than 0 h" \
        in out
