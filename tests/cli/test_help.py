"""The CLI as a newcomer meets it: help that names values as a reader knows them (no `<bool>`, `<list[str]>`),
examples under every command (each one parses), `--version`, the default suite marked, a broken plugin's reason
below a narrow table, a cached `prepare` in one line, and `store gc` saying why it keeps what it keeps. Fast:
the CLI in-process, the world never built."""

from __future__ import annotations

import re
import shlex

import pytest
import typer.main

from harness import registry
from harness.cli import app
from harness.cli.help import EXAMPLES
from tests.store.test_store_safety import cli

TYPER_TYPE = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\]|[a-z]+ range)>", re.I)


def commands(command=None, path=()):
    """(path, command) of the root, every group and every command."""
    command = command or typer.main.get_command(app)
    yield " ".join(path), command
    for name, sub in getattr(command, "commands", {}).items():
        yield from commands(sub, (*path, name))


PATHS = [p for p, _ in commands()]


def help_text(capfd, path: str) -> str:
    code, out, err = cli(capfd, *path.split(), "--help")
    assert code == 0 and err == "", err
    return out


@pytest.mark.parametrize("path", PATHS, ids=[p or "harness" for p in PATHS])
def test_help_names_values_as_a_reader_does_and_shows_examples(capfd, path):
    text = help_text(capfd, path)
    assert not TYPER_TYPE.search(text), TYPER_TYPE.search(text)
    assert "Examples:" in text and "  harness " in text
    flags = [line for line in text.splitlines() if re.search(r"│ +--(help|json|force|yes|dry-run)\b", line)]
    for line in flags:  # a flag takes no value: nothing beside it but its help
        assert not re.search(r"--[a-z-]+ +(TEXT|INTEGER|PATH|NUMBER|VALUE)\b", line), line


def test_every_command_has_examples_and_every_example_parses():
    """An example that names an option a command does not have (a renamed flag) fails here."""
    tree = dict(commands())
    assert set(EXAMPLES) == set(tree)
    for path, examples in EXAMPLES.items():
        for line, what in examples:
            argv = shlex.split(line.split(" > ")[0])
            assert argv[0] == "harness" and what
            command, args, names = tree[""], argv[1:], []
            while args and args[0] in getattr(command, "commands", {}):
                names.append(args[0])
                command = command.commands[args[0]]
                args = args[1:]
            assert names[:len(path.split())] == path.split(), line  # a group's examples may show its commands
            if "--help" not in args:  # help would print and exit; the command was found
                command.make_context(names[-1] if names else "harness", args)  # raises on a bad option or value


def test_named_values_in_run_help(capfd):
    text = help_text(capfd, "run")
    for shown in ("--defence +DEFENCE", "--attack +ATTACK", "--set +TARGET.FIELD=VALUE", "--seed +SEED",
                  "--results-dir +DIR", "--backend +hf\\|vllm\\|auto"):
        assert re.search(shown, text), shown
    assert re.search(r"--json +print the run record", text)
    assert "harness run --defence repnoise --attack sft-1k" in text


def test_version_names_the_package_and_the_commit(capfd):
    code, out, _ = cli(capfd, "--version")
    assert code == 0 and re.fullmatch(r"immunization-bench \S+ \((git [0-9a-f]{12}, (clean|uncommitted changes)|"
                                      r"not a git checkout)\)\n", out), out


def test_list_suites_marks_the_default(capfd):
    code, out, _ = cli(capfd, "list", "suites")
    rows = [re.match(r"^  (.+?)  +(\S)", line) for line in out.splitlines()[1:]]
    marked = [m.group(1) for m in rows if "(default)" in m.group(1)]
    assert code == 0 and marked == [f"{registry.default_name('suite')} (default)"]
    assert len({m.start(2) for m in rows}) == 1  # the descriptions line up, long names included


def test_a_broken_plugins_reason_is_below_a_narrow_table(monkeypatch, capfd):
    fake = registry.Declaration("broken", "tests.fixtures.broken_plugin", "broken-dist", "1")
    real = registry._declarations
    monkeypatch.setattr(registry, "_declarations",
                        lambda kind: {**real(kind), "broken": [fake]} if kind == "defence" else real(kind))
    code, out, _ = cli(capfd, "plugins", "--kind", "defence")
    table, _, below = out.partition("\n\n")
    (row,) = [line for line in table.splitlines() if line.split()[1] == "broken"]
    assert code == 0 and "BROKEN" in row and "boom" not in table
    width = max(len(line) for line in table.splitlines() if "broken" not in line.split()[1:2])
    assert len(row) <= width  # the broken row is no wider than the others
    assert "1 broken plugin(s)" in below and "defence broken: defence 'broken' failed to load" in below
    assert "RuntimeError: boom" in below


def test_a_cached_prepare_is_one_line(monkeypatch, capfd, tmp_path):
    """Nothing written: 'already built', naming the suite and where; written: 'built'; --json: the report."""
    import harness.pipeline

    report = {"base": {"parameters": 1}, "model": {"id": "store:suites/tiny-smoke-x/base"}}
    monkeypatch.setattr(harness.pipeline, "prepare", lambda suite, **kw: report)
    home = tmp_path / "store"
    code, out, _ = cli(capfd, "prepare", "tiny", "--set", "suite.size=smoke", "--home", str(home))
    assert code == 0 and out.count("\n") == 1
    assert out.startswith("suite tiny (size=smoke) is already built (base model ") and str(home) in out
    code, out, _ = cli(capfd, "prepare", "tiny", "--set", "suite.size=smoke", "--home", str(home), "--json")
    assert code == 0 and out.startswith("{") and '"parameters": 1' in out

    def writes(suite, *, store, **kw):
        store.writes += 2
        return report

    monkeypatch.setattr(harness.pipeline, "prepare", writes)
    code, out, _ = cli(capfd, "prepare", "tiny", "--set", "suite.size=smoke", "--home", str(home))
    assert code == 0 and "suite tiny (size=smoke) built (" in out and "2 artifact(s) written" in out


def test_main_refuses_a_bad_progress_interval_before_any_work(monkeypatch, capfd):
    monkeypatch.setenv("HARNESS_PROGRESS_EVERY", "soon")
    code, out, err = cli(capfd, "list")
    assert code == 2 and out == "" and err.splitlines() == [
        "error: HARNESS_PROGRESS_EVERY='soon' is not a number of seconds (0 or more; e.g. HARNESS_PROGRESS_EVERY=15)"]

