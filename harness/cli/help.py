"""How `--help` reads: value names a user recognises, one-line summaries, and examples under every command.

Typer names a value by its Python type (`<str>`, `<list[str]>`, `<bool>`). `App` builds its commands and groups
from `Command` and `Group`, which name each value as a reader knows it: the name an option declares
(`metavar="DEFENCE"`, `TARGET.FIELD=VALUE`), else TEXT, INTEGER, NUMBER or PATH, nothing beside a flag, and an
argument by its own name in capitals. A docstring's line breaks are joined (rich would keep them), its first
sentence is the summary in the command list, and `EXAMPLES` (keyed by the command's path, e.g. `store gc`)
becomes the "Examples:" epilog. `tests/cli/test_help.py` parses every example against the commands.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup

# Command path -> (command line, what it does). Every command has at least one; the test parses each.
EXAMPLES: dict[str, list[tuple[str, str]]] = {
    "": [("harness run --defence repnoise --attack sft-1k", "one cell of the benchmark"),
         ("harness list defences", "what can be run"), ("harness run --help", "a command's options")],
    "list": [("harness list", "every kind"), ("harness list suites", "the suites; the default is marked")],
    "prepare": [("harness prepare", "build the default suite (tiny) once; later runs find it cached"),
                ("harness prepare tiny --set suite.size=smoke", "the smaller world the tests use"),
                ("harness prepare beavertails-llama2 --model ./llama-2-7b-chat", "a real suite on a local model")],
    "run": [("harness run --defence repnoise --attack sft-1k", "one cell, recorded under runs/"),
            ("harness run --defence none --attack sft-250 --set attack.lr=1e-4 --seed 1 --attack-seed 2",
             "override a setting; other seeds"),
            ("harness run --defence none --attack sft-250 --set suite.size=smoke", "a small world: minutes on a CPU"),
            ("harness run --defence repnoise --attack sft-1k --json > record.json", "the record as JSON on stdout")],
    "sweep": [("harness sweep grids/tiny-v3.yaml --dry-run", "the grid's cells and which are done"),
              ("harness sweep grids/tiny-v3.yaml --max-parallel 2", "run them, two jobs at once"),
              ("harness sweep grids/tiny-v3.yaml --status", "done / running / failed / pending per defence")],
    "report": [("harness report", "the budget table of the default suite from results/"),
               ("harness report --results-dir runs", "from this machine's working records"),
               ("harness report --protocol 2", "the published board of an older protocol (results/<suite>/v2/)")],
    "tables": [("harness tables", "rebuild every suite's condition tables under results/"),
               ("harness tables --suite tiny --quiet", "one suite; print only the paths")],
    "leaderboard": [("harness leaderboard", "leaderboard/site/ and leaderboard/LEADERBOARD.md"),
                    ("harness leaderboard --out /tmp/board", "somewhere else")],
    "validate": [("harness validate", "every published record and table"),
                 ("harness validate results/tiny/v2 --deep", "also re-derive metrics from the stored generations"),
                 ("harness validate --rerun 2 --seed 1", "rerun two sampled cells end to end and compare")],
    "show": [("harness show 4fc3fddc", "a record by (a prefix of) its run id"),
             ("harness show 4fc3fddc --json", "the raw record")],
    "tune": [("harness tune repnoise", "tune on the validation split; the log goes to runs/"),
             ("harness tune repnoise --scan --set defence.lr=1e-4", "every setting with lr 1e-4: evidence only")],
    "tune-attack": [("harness tune-attack repnoise", "the strongest attack on tuned repnoise within the capability "
                     "bound; the log goes to runs/"),
                    ("harness tune-attack repnoise --set suite.size=smoke", "on the smaller world")],
    "publish": [("harness publish --all --dry-run", "what would be published from runs/"),
                ("harness publish 4fc3fddc 9a1b2c3d", "chosen records")],
    "schema": [("harness schema", "write schemas/run-record.schema.json"),
               ("harness schema --check", "exit 1 if the committed file is stale (CI)")],
    "plugins": [("harness plugins", "every installed plugin, its version, package and source file"),
                ("harness plugins --kind defence", "one kind")],
    "plugins check": [("harness plugins check my-defence", "the conformance check of a submission"),
                      ("harness plugins check repnoise --set defence.beta=0.01", "at a non-default setting"),
                      ("harness plugins check repnoise vaccine", "several: one suite build, one time yardstick")],
    "cards": [("harness cards check", "every defence's fidelity card")],
    "cards check": [("harness cards check", "every registered defence; the built-ins must have a card"),
                    ("harness cards check repnoise vaccine", "only these")],
    "store": [("harness store ls", "what the store holds"), ("harness store gc", "what gc would delete")],
    "store verify": [("harness store verify", "hash every artifact"),
                     ("harness store verify --delete", "and delete the damaged ones")],
    "store init": [("harness store init --home /data/store", "adopt a store an older version wrote")],
    "store ls": [("harness store ls", "size per kind and per suite"),
                 ("harness store ls --results-dir results --results-dir runs", "needed by these records")],
    "store gc": [("harness store gc", "dry run: what would go, and why the rest stays"),
                 ("harness store gc --min-age-hours 0 --yes", "delete now, even fresh artifacts")],
}

TYPE_NAMES = {str: "TEXT", int: "INTEGER", float: "NUMBER", Path: "PATH"}


def readable(params: list[Any]) -> None:
    """Name each parameter's value as a reader knows it (see the module docstring)."""
    for param in params:
        if isinstance(param, TyperArgument):
            param.metavar = param.metavar or param.name.upper()
            # the argument's name already says what it is: no second column repeating it
            param.display_type_rich = lambda ctx: None  # type: ignore[method-assign]
        elif param.metavar is None:
            if getattr(param, "is_flag", False):
                param.metavar = ""
            else:
                annotation = param.type_descriptor.annotation
                inner = getattr(annotation, "__args__", (annotation,))[0]
                param.metavar = TYPE_NAMES.get(inner, "VALUE")


def unwrap(text: str | None) -> str | None:
    """A docstring's paragraphs, each on one line (rich would keep the source's line breaks)."""
    if text is None:
        return None
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", text.strip()))


def summary(text: str | None) -> str | None:
    """The first sentence: what the command list shows."""
    if not text:
        return None
    return re.split(r"(?<=[.:])\s+(?=[A-Z])", text.split("\n\n")[0], maxsplit=1)[0]


def epilog(path: str) -> str | None:
    """The "Examples:" section of a command's help: each example a comment line, then the command."""
    if path not in EXAMPLES:
        return None
    # The leading newline keeps the indentation: typer dedents all lines but the first (inspect.cleandoc).
    return "\nExamples:\n" + "\n".join(f"  # {escape(what)}\n  {escape(line)}" for line, what in EXAMPLES[path])


def command_path(ctx: Any) -> str:
    """`store gc` for `harness store gc` (whatever the program is called)."""
    names = []
    while ctx.parent is not None:
        names.append(ctx.info_name)
        ctx = ctx.parent
    return " ".join(reversed(names))


class _Readable:
    """What `Command` and `Group` add to typer's classes."""

    def _setup(self) -> None:
        self.help = unwrap(self.help)  # type: ignore[has-type]
        self.short_help = self.short_help or summary(self.help)  # type: ignore[has-type]
        readable(self.params)  # type: ignore[attr-defined]

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            readable([option])
        return option

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.epilog = self.epilog or epilog(command_path(ctx))
        super().format_help(ctx, formatter)  # type: ignore[misc]


class Command(_Readable, TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setup()


class Group(_Readable, TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._setup()


class App(typer.Typer):
    """A typer app whose commands and groups are `Command` and `Group`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cls=Group, **kwargs)

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return super().command(*args, cls=kwargs.pop("cls", Command), **kwargs)
