"""A tuning log as a reader sees it (harness.tuning.trials): the Pareto front, where the choice sits in its space,
what `harness tune` prints, and logs written before protocol 3 still read."""

from pathlib import Path

from harness.tuning.logs import Candidate, Trial, TuningLog, read_log
from harness.tuning.trials import front_points, pareto_front, positions, trial_views, tune_summary

REPO = Path(__file__).resolve().parents[2]


def _trial(lr, score, qa, *, seed=0, stable=True, run_id="r"):
    return Trial(params={"lr": lr}, seed=seed, run_id=run_id, hs_post=score, auc=score, stable=stable, missed=[],
                 score=score, measure="access", qa_delta=qa)


def test_positions_say_which_end_or_interior():
    space = {"lr": [1e-4, 1e-3, 1e-2], "epochs": [3, 1, 2], "layers": ["all", "last"], "beta": [0.5]}
    assert positions(space, {"lr": 1e-4, "epochs": 3, "layers": "all", "beta": 0.5}) == {
        "lr": "smallest", "epochs": "largest", "layers": "unordered", "beta": "only"}
    assert positions(space, {"lr": 1e-3, "epochs": 2}) == {"lr": "interior", "epochs": "interior"}
    assert positions(space, {}) == {}
    assert positions({"flag": [False, True]}, {"flag": True}) == {"flag": "unordered"}  # not a magnitude


def test_front_points_are_the_undominated_trials_in_order():
    trials = [_trial(1e-4, 0.5, 0.0), _trial(1e-3, 0.2, -0.1), _trial(1e-2, 0.2, -0.3), _trial(3e-3, 0.6, 0.0),
              _trial(3e-2, 0.1, None)]
    front = front_points(trials)
    assert [p.trial for p in front] == [0, 1] and front[1].params == {"lr": 1e-3} and front[1].score == 0.2
    assert pareto_front([(t.headline, t.qa_delta) for t in trials]) == {0, 1}  # no qa delta: on no front


def _log(**fields):
    base = dict(suite="t", protocol_version=3, suite_params={}, validation={}, defence="d", defence_version="1",
                space={"lr": [1e-4, 1e-3, 1e-2]}, trials_budget=24, attack="a", attack_params={},
                trials=[_trial(1e-4, 0.5, 0.0), _trial(1e-2, 0.2, -0.3)], chosen={"lr": 1e-2}, passed_guard=True,
                sampler="whole", confirm_top=3, chosen_position={"lr": "largest"},
                candidates=[Candidate(params={"lr": 1e-2}, seeds=[0, 1, 2], scores=[0.2, 0.3, 0.1], held=True,
                                      mean=0.2)],
                reference_defence="none", reference=[_trial(None, 0.9, 0.0, seed=s) for s in (0, 1, 2)])
    return TuningLog(**{**base, **fields})


def test_the_summary_states_the_mean_the_reference_and_the_end_the_choice_sits_at():
    log = _log(pareto_front=front_points(_log().trials))
    lines = tune_summary(log)
    assert lines[0] == "candidate {'lr': 0.01}: access 0.200 (seed 0), 0.300 (seed 1), 0.100 (seed 2); mean 0.200"
    assert lines[1].startswith("reference none: access 0.900 (seed 0)") and lines[1].endswith("mean 0.900")
    assert lines[2] == "chosen {'lr': 0.01}" and lines[3].startswith("  lr=0.01: largest value of its space")
    assert lines[4] == "Pareto front (access vs harmless-QA delta): 2 of 2 trials"
    interior = tune_summary(_log(chosen_position={"lr": "interior"}))
    assert "  lr=0.01: interior" in interior and not any("Pareto" in line for line in interior)
    assert tune_summary(_log(passed_guard=False, chosen={}, candidates=[]))[-1].startswith("no setting passed")


def test_views_take_the_logs_front_and_show_the_reference(tmp_path):
    log = _log(pareto_front=front_points(_log().trials)[:1])  # the log's front wins over a recomputed one
    views = trial_views(log, tmp_path)
    assert [v.role for v in views] == ["search", "search", "reference", "reference", "reference"]
    assert [v.pareto for v in views] == [True, False, False, False, False]
    assert [v.chosen for v in views] == [False, True, False, False, False]
    assert views[1].qa_delta == -0.3 and views[1].record is None  # the log's own number without a record


def test_committed_logs_before_protocol_3_still_read_and_get_a_front_from_their_records():
    paths = [p for p in sorted(REPO.glob("results/*/v*/tuning/*.json")) if not p.name.endswith(".scan.json")
             and read_log(p, TuningLog).sampler is None]  # protocol 3's logs name their sampler and carry a front
    assert len(paths) >= 5
    for path in paths:
        log = read_log(path, TuningLog)
        assert log.pareto_front is None and log.candidates == [] and log.reference == []
        views = trial_views(log, path.parent / "runs")
        assert any(v.pareto for v in views) and all(v.trial.headline == v.trial.hs_post for v in views)
