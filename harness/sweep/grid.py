"""Grid files: what a sweep runs, as data (`harness sweep GRID.yaml`).

A grid names a suite (and its settings, and optionally several worlds: suite settings each cell runs in),
optionally another base model, the defences (each with its settings
and defence seeds), the attacks (budgets, shared settings and attack seeds; by default the suite's budget
grid) and the conditions to measure (pairs of harm subsets: `all`/`all` measures resistance, stability and
trainability; a held-out pair measures generalization). The file is read strictly: unknown keys, duplicate
keys and every invalid value are reported at once, in one line, before any work. A hostile file costs no
more than a bounded read: at most MAX_GRID_BYTES, MAX_GRID_DEPTH levels, no YAML anchors or aliases, and at
most MAX_CELLS cells, counted from the grid's dimensions before any cell is planned.

`plan` expands a grid into the sweep's DAG: one `DefendNode` per defended model (defence, settings, defence
seed, defence harm subset), shared by every `Cell` (one run: attack budget, attack seed, condition) that
attacks it. Cells are typed values, a RunSpec each, never `--set` text parsed back.

A defence registered `seeded=False` (its defended model does not depend on the seed, e.g. `none`) is built at
the first of its defence seeds only: more seeds would be copies of one model, not replicates. Its cells keep the
attack seeds the grid gives (without `attacks.seeds`: one per defence seed it lists), and `Plan.notes` says so.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError

from harness.errors import ConfigError, HarnessError
from harness.specs import MAX_SEED, RunSpec, stable_hash
from harness.strict_yaml import MAX_DEPTH, parse
from harness.suite import Suite

# A seed is a plain integer: YAML `true` is not 1, `1.0` is not 1 (pydantic's lax mode would take both).
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
Settings = dict[str, Any]


class GridModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DefenceEntry(GridModel):
    """One defence setting of the grid: a defended model per defence seed (and defence harm subset)."""

    name: str = Field(description="defence name (harness list defences)")
    settings: Settings = Field(default_factory=dict, description="defence config fields, over the suite's values "
                               "and a committed tuning log's")
    seeds: list[Seed] | None = Field(None, min_length=1, description="defence seeds of this entry (default: the "
                                     "grid's defence_seeds)")


class BudgetEntry(GridModel):
    """One attack budget: an attack and the settings that set its strength."""

    attack: str = Field(description="attack name (harness list attacks)")
    settings: Settings = Field(default_factory=dict, description="attack config fields of this budget, e.g. lr")
    label: str | None = Field(None, description="short name in tables and progress (default: attack + settings)")


class Attacks(GridModel):
    """The attacks every defended model gets."""

    budgets: list[BudgetEntry] | None = Field(None, min_length=1, description="the budgets (default: the suite's "
                                              "budget grid)")
    settings: Settings = Field(default_factory=dict, description="attack config fields for every budget (not one "
                               "a budget sets), e.g. samples")
    seeds: list[Seed] | None = Field(None, min_length=1, description="attack seeds, each run on every defended "
                                     "model (default: each cell's defence seed)")


class Condition(GridModel):
    """A pair of harm subsets: what the defence trains on, and what the attack (and its evaluation) uses."""

    name: str = Field(description="short name in progress and status lines")
    defence_subset: str = Field("all", description="'all', a suite group, or '~group' (all but the group)")
    attack_subset: str = Field("all", description="'all', a suite group, or '~group'")
    attack: Settings = Field(default_factory=dict, description="attack config fields for this condition (e.g. "
                             "fewer samples for a small subset)")
    eval: Settings = Field(default_factory=dict, description="eval fields for this condition (e.g. n_prompts)")
    budgets: list[str] | None = Field(None, min_length=1, description="labels of the budgets this condition runs "
                                      "(default: every budget)")


class Grid(GridModel):
    """A sweep: suite x defences x defence seeds x conditions x attack budgets x attack seeds."""

    suite: str = Field(description="suite name (harness list suites)")
    suite_settings: Settings = Field(default_factory=dict, description="suite config fields, e.g. size: smoke")
    worlds: list[Settings] | None = Field(None, min_length=1, description="suite config fields of each world, over "
                                          "suite_settings (e.g. [{seed: 0}, {seed: 1}, {seed: 2}]): every cell runs "
                                          "in each (default: one world, suite_settings')")
    model: str | None = Field(None, description="base model (hub id or local folder; default: the suite's)")
    eval: Settings = Field(default_factory=dict, description="eval fields for every cell (e.g. n_prompts)")
    defences: list[DefenceEntry] = Field(min_length=1, description="the defence settings")
    defence_seeds: list[Seed] = Field([0], min_length=1, description="defence seeds of every entry without seeds")
    attacks: Attacks = Field(Attacks(), description="budgets, shared settings and attack seeds")
    conditions: list[Condition] = Field([Condition(name="main")], min_length=1,
                                        description="harm-subset pairs (default: all/all)")
    tuned_attacker: bool = Field(False, description="also search a tuned attacker against each defence (as `harness "
                                 "tune-attack` does: at its tuned settings and first defence seed, in the first "
                                 "world; one log per defence); its chosen attacks run on the test data as records")


# ------------------------------------------------------------------------------------------------ reading
# A grid is a few kilobytes of plain data; these bounds refuse hostile files before they cost time or memory.
MAX_GRID_BYTES = 2**16  # the file: 64 KiB (the committed grids are under 1 KiB; PyYAML reads ~100 KiB/s)
MAX_GRID_DEPTH = MAX_DEPTH  # nested collections (a grid needs about 6): harness.strict_yaml
MAX_CELLS = 10_000      # cells of one grid, counted before any is planned (split a bigger sweep into grids)


def load_grid(path: Path) -> Grid:
    """Read and validate a grid file; every problem in one `ConfigError` line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise HarnessError(f"grid file {path} not found" if not path.exists() else f"grid file {path} is not a file")
    with open(path, "rb") as fh:
        raw = fh.read(MAX_GRID_BYTES + 1)  # never more, whatever the file's size
    if len(raw) > MAX_GRID_BYTES:
        raise ConfigError(f"grid file {path} is larger than {MAX_GRID_BYTES // 1024} KiB (a grid is a few KiB "
                          "of settings)")
    data = parse(raw, f"grid file {path}")
    if not isinstance(data, dict):
        raise ConfigError(f"grid file {path}: expected a mapping with suite, defences, ... (got {type(data).__name__})")
    try:
        return Grid.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or '(grid)'}: "
                    + (f"unknown key (valid: {_valid_keys(e['loc'])})" if e["type"] == "extra_forbidden" else e["msg"])
                    for e in exc.errors()]
        more = f"; and {len(problems) - 20} more" if len(problems) > 20 else ""  # one line, of bounded length
        raise ConfigError(f"invalid grid file {path}: " + "; ".join(problems[:20]) + more) from None


def _valid_keys(loc: tuple[Any, ...]) -> str:
    """The keys allowed where an unknown key was found."""
    model: type[BaseModel] = Grid
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        ann = model.model_fields[str(part)].annotation
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        inner += [b for a in getattr(ann, "__args__", ()) for b in getattr(a, "__args__", ())
                  if isinstance(b, type) and issubclass(b, BaseModel)]
        if not inner:
            break
        model = inner[0]
    return ", ".join(model.model_fields)


# ------------------------------------------------------------------------------------------------ planning
@dataclass(frozen=True)
class PlannedBudget:
    """One attack budget of a planned grid: the attack, the settings that set its strength, its column label."""

    attack: str
    settings: Settings
    label: str


@dataclass(frozen=True)
class Cell:
    """One run of the grid: its complete spec and where its values came from (the record's overrides)."""

    spec: RunSpec
    overrides: dict[str, Any]
    label: str
    defend_id: str  # the DefendNode it needs
    group: str      # its summary row: defence, settings, condition
    id: str         # the run id


@dataclass(frozen=True)
class DefendNode:
    """A defended model (and what every attack of it shares), built from the spec of its first cell."""

    id: str
    spec: RunSpec
    overrides: dict[str, Any]
    label: str


@dataclass(frozen=True)
class AttackerNode:
    """A tuned-attacker search against one defence (`Grid.tuned_attacker`): `harness tune-attack` as a sweep job."""

    id: str
    spec: RunSpec   # the defence, its first defence seed and the first world's suite config
    label: str
    # where its chosen attack and the next best run on the test data: the grid's worlds (suite params) and the
    # attack seeds of the defence's first seed, so they have the units of the grid's cells
    test_worlds: tuple[dict[str, Any], ...] = ()
    attack_seeds: tuple[int | None, ...] = ()


@dataclass
class Plan:
    grid: Grid
    suite: Suite
    nodes: dict[str, DefendNode] = field(default_factory=dict)
    attackers: dict[str, AttackerNode] = field(default_factory=dict)
    tuned_from: Path | None = None  # the results folder of the tuning logs
    cells: list[Cell] = field(default_factory=list)
    ids: set[str] = field(default_factory=set)
    provisional: str | None = None  # why run ids are not final (a dry run that did not locate the model)
    notes: dict[str, str] = field(default_factory=dict)  # defence group -> what the plan changed (one seed only)

    def cells_of(self, node_id: str) -> list[Cell]:
        return [c for c in self.cells if c.defend_id == node_id]


def budgets(grid: Grid, suite: Suite) -> list[PlannedBudget]:
    """The grid's budgets, or the suite's budget grid."""
    if grid.attacks.budgets is None:
        if not suite.budget_grid:
            raise ConfigError(f"grid lists no attacks.budgets and suite '{suite.name}' defines no budget grid")
        return [PlannedBudget(b.attack, dict(b.params), b.label) for b in suite.budget_grid]
    return [PlannedBudget(b.attack, dict(b.settings), b.label or " ".join([b.attack, *(f"{k}={v}" for k, v in
                                                                                b.settings.items())]))
            for b in grid.attacks.budgets]


def defend_id(spec: RunSpec) -> str:
    """What determines a defended model: suite, base model, defence (settings), seed, defence harm subset."""
    return stable_hash({"suite": spec.suite.model_dump(mode="json"), "model": spec.model.model_dump(),
                        "defence": spec.defence.model_dump(mode="json"), "seed": spec.seed,
                        "subset": spec.subsets.defence})


def _check_shape(grid: Grid, budget_list: list[PlannedBudget]) -> None:
    """Grid-level mistakes no config catches: repeats, and shared settings that a budget overrides."""
    problems = []
    seen: dict[str, int] = {}
    for i, d in enumerate(grid.defences):
        key = stable_hash({"name": d.name, "settings": d.settings})
        if key in seen:
            problems.append(f"defences.{i} repeats defences.{seen[key]} ({d.name} with the same settings)")
        seen.setdefault(key, i)
    labels = Counter(b.label for b in budget_list)  # counted once: list.count per label is quadratic
    problems += [f"attacks.budgets: label '{x}' appears {n} times" for x, n in sorted(labels.items()) if n > 1]
    names = Counter(c.name for c in grid.conditions)
    problems += [f"conditions: name '{x}' appears {n} times" for x, n in sorted(names.items()) if n > 1]
    for where, settings in [("attacks.settings", grid.attacks.settings),
                            *((f"conditions.{c.name}.attack", c.attack) for c in grid.conditions)]:
        clash = sorted({k for b in budget_list for k in b.settings} & set(settings))
        if clash:  # a shared value would be silently overridden in those budgets' cells
            setters = ", ".join(dict.fromkeys(b.label for b in budget_list if set(b.settings) & set(clash)))
            problems.append(f"{where} sets {', '.join(clash)}, which the budgets set (budget(s) {setters}); put it "
                            "in each budget's settings")
    for c in grid.conditions:
        unknown = [x for x in c.budgets or [] if x not in labels]
        if unknown:
            problems.append(f"conditions.{c.name}.budgets: unknown label(s) {', '.join(unknown)} (available: "
                            f"{', '.join(labels)})")
    worlds = Counter(stable_hash(w) for w in grid.worlds or [])
    if any(n > 1 for n in worlds.values()):
        problems.append("worlds repeats a world")
    for name, seeds in [("defence_seeds", grid.defence_seeds), ("attacks.seeds", grid.attacks.seeds or []),
                        *((f"defences.{i}.seeds", d.seeds or []) for i, d in enumerate(grid.defences))]:
        if len(set(seeds)) != len(seeds):
            problems.append(f"{name} repeats a seed: {seeds}")
    if problems:
        raise ConfigError("invalid grid: " + "; ".join(problems))


def cell_count(grid: Grid, budget_list: list[PlannedBudget]) -> int:
    """How many cells `plan` makes of the grid at most, by arithmetic: nothing is resolved or materialised (a
    seed-independent defence makes fewer: one defence seed)."""
    labels = Counter(b.label for b in budget_list)
    runs = sum(len(budget_list) if c.budgets is None else sum(labels[x] for x in set(c.budgets))
               for c in grid.conditions)
    defended = sum(len(e.seeds or grid.defence_seeds) for e in grid.defences)
    return defended * runs * len(grid.attacks.seeds or [None]) * len(grid.worlds or [{}])


def plan(grid: Grid, *, results_dir: Path, tuned_from: Path | None = None, locate: bool = True,
         max_cells: int = MAX_CELLS) -> Plan:
    """Resolve every cell of the grid (every config error of every combination reported at once), each defence
    at the tuned settings of the tuning logs under `tuned_from` (default: `results_dir`). A grid of more than
    `max_cells` cells is refused before any is resolved.

    `locate=False` (a dry run): a hub model is not fetched or looked up, so its run ids are provisional.
    """
    from harness.resolve import load_suite, resolve

    _, suite = load_suite(grid.suite, dict(grid.suite_settings))
    budget_list = budgets(grid, suite)
    count = cell_count(grid, budget_list)
    if count > max_cells:
        raise ConfigError(f"invalid grid: it names {count:,} cells, more than the {max_cells:,} one grid may plan; "
                          "split it into several grid files")
    _check_shape(grid, budget_list)
    out, problems = Plan(grid=grid, suite=suite, tuned_from=tuned_from or results_dir), []
    for world, entry, condition, budget in _combinations(grid, budget_list):
        extra = {"suite": {**grid.suite_settings, **world}, "defence": dict(entry.settings),
                 "attack": {**grid.attacks.settings, **condition.attack, **budget.settings},
                 "eval": {**grid.eval, **condition.eval},
                 "subsets": {"defence": condition.defence_subset, "attack": condition.attack_subset}}
        try:
            spec, _, overrides = resolve(grid.suite, entry.name, budget.attack, extra=extra, model=grid.model,
                                         tuned_from=tuned_from or results_dir, locate=locate)
        except HarnessError as exc:
            if str(exc) not in problems:
                problems.append(str(exc))
            continue
        if spec.model.revision.startswith("unlocated:"):
            out.provisional = f"model '{spec.model.id}' is not looked up in a dry run"
        _add_cells(out, grid, entry, condition, budget, spec, overrides, world)
        if grid.tuned_attacker and world == (grid.worlds or [{}])[0] and not entry.settings:
            first = spec.model_copy(update={"seed": (entry.seeds or grid.defence_seeds)[0], "attack_seed": None})
            attacker_id = stable_hash({"tuned-attacker": entry.name, "suite": first.suite.model_dump(mode="json"),
                                       "model": first.model.model_dump(), "seed": first.seed})
            pairs, _ = seed_plan(grid, entry)
            out.attackers.setdefault(attacker_id, AttackerNode(
                attacker_id, first, f"tune-attack {entry.name}", test_worlds=tuple(dict(w) for w in grid.worlds or ()),
                attack_seeds=tuple(a for s, a in pairs if s == first.seed)))
    if problems:
        raise ConfigError(" | ".join(problems))
    return out


def _combinations(grid: Grid, budget_list: list[PlannedBudget]
                  ) -> Iterator[tuple[Settings, DefenceEntry, Condition, PlannedBudget]]:
    for entry in grid.defences:  # a defence's worlds together: a sweep cut short leaves whole rows
        for world in grid.worlds or [{}]:
            for condition in grid.conditions:
                for budget in budget_list:
                    if condition.budgets is None or budget.label in condition.budgets:
                        yield world, entry, condition, budget


def _add_cells(out: Plan, grid: Grid, entry: DefenceEntry, condition: Condition, budget: PlannedBudget, spec: RunSpec,
               overrides: dict[str, Any], world: Settings) -> None:
    """The cells of one (world, defence entry, condition, budget): every defence seed x attack seed (a
    seed-independent defence: its first defence seed x the attack seeds, `seed_plan`)."""
    settings = ",".join(f"{k}={v}" for k, v in entry.settings.items())
    group = f"{entry.name}{f'({settings})' if settings else ''}"
    if len(grid.conditions) > 1:
        group += f" [{condition.name}]"
    if len(grid.worlds or []) > 1:
        group += f" [world {','.join(f'{k}={v}' for k, v in world.items())}]"
    pairs, note = seed_plan(grid, entry)
    if note:
        out.notes[group] = note
    for seed, attack_seed in pairs:
        cell_spec = spec.model_copy(update={"seed": seed, "attack_seed": attack_seed})
        node_id = defend_id(cell_spec)
        defence = f"{group} seed {seed}"
        if node_id not in out.nodes:
            out.nodes[node_id] = DefendNode(node_id, cell_spec, overrides, defence)
        label = f"{defence} x {budget.label} attack seed {cell_spec.attack_seed_used}"
        run_id = cell_spec.run_id
        if run_id in out.ids:
            raise ConfigError(f"invalid grid: two cells are the same run ({label}): defence settings equal "
                              "to the defaults repeat another entry")
        out.ids.add(run_id)
        out.cells.append(Cell(cell_spec, overrides, label, node_id, group, run_id))


def seed_plan(grid: Grid, entry: DefenceEntry) -> tuple[list[tuple[int, int | None]], str]:
    """(defence seed, attack seed or None: the defence seed) of each cell of a defence entry, and a note where the
    defence is seed-independent (registered `seeded=False`): built at its first defence seed only, attacked with
    the grid's attack seeds or, without them, one per defence seed it lists (the cell at the first keeps
    attack_seed None, so its run id is the one a seeded plan gives it)."""
    from harness import registry

    seeds, attack_seeds = entry.seeds or grid.defence_seeds, grid.attacks.seeds
    if registry.get("defence", entry.name).seeded or len(seeds) == 1:
        return [(s, a) for s in seeds for a in attack_seeds or [None]], ""
    first, draws = seeds[0], attack_seeds or seeds
    note = (f"{entry.name} is seed-independent (registered seeded=False): one defended model at defence seed {first} "
            f"instead of {len(seeds)} copies, attacked with attack seeds {', '.join(map(str, draws))}")
    return [(first, None if a == first and attack_seeds is None else a) for a in draws], note
