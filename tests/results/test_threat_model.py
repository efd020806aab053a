"""The threat model travels from the records to the tables, the summary rows, the report and the leaderboard."""

from harness.results.budget_table import markdown
from harness.results.summary import summarise
from harness.results.tables import build
from leaderboard.board import Row
from leaderboard.markdown import _name
from tests.factories import record


def records():
    out = []
    for seed in (0, 1, 2):
        out.append(record("none", seed=seed, post=0.9))
        out.append(record("sv", seed=seed, post=0.1).model_copy(update={"threat_model": "fine-tuning service"}))
    return out


def test_threat_model_is_a_column_a_label_and_a_legend():
    frames = build(records())
    for name in ("resistance", "stability", "generalization", "trainability"):
        found = dict(zip(frames[name]["defence"], frames[name]["threat_model"], strict=True))
        assert found == {"none": "open weights", "sv": "fine-tuning service"}
    params = frames["resistance"]["suite_params"].iloc[0]
    summary = summarise(frames, params, 0.5, unseeded=(), reference="none")
    labels = {r.key.name: r.label for r in summary.rows}
    assert labels == {"none": "none", "sv": "sv [fine-tuning service]"}
    text = markdown(summary)
    assert "| sv [fine-tuning service] |" in text and "[fine-tuning service]: another threat model" in text
    sv = next(r for r in summary.rows if r.key.name == "sv")
    assert _name(Row(summary=sv, cells={}, notes={}, provenance={})) == "sv v1 [fine-tuning service]"


def test_records_without_it_read_as_open_weights():
    plain = record("none")
    data = plain.model_dump(mode="json", by_alias=True)
    del data["threat_model"]
    assert type(plain).model_validate(data).threat_model == "open weights"
    summary = summarise(build([plain]), build([plain])["resistance"]["suite_params"].iloc[0], 0.5, unseeded=())
    assert "another threat model" not in markdown(summary)
