import pytest

from harness.errors import ConfigError
from harness.specs import (
    EvalSpec,
    ModelSpec,
    PluginSpec,
    RunSpec,
    canonical_json,
    parse_overrides,
    stable_hash,
    validate_config,
)


def make_spec(**defence_params) -> RunSpec:
    return RunSpec(suite=PluginSpec(name="tiny", version="1", params={"size": "smoke"}),
                   model=ModelSpec(id="store:x/base", revision="r1"),
                   defence=PluginSpec(name="none", version="1", params=defence_params),
                   attack=PluginSpec(name="sft-1k", version="1", params={"lr": 3e-4, "samples": 1000}),
                   eval=EvalSpec(max_new_tokens=8, n_prompts=4, batch_size=2),
                   judges=(PluginSpec(name="j", version="1", params={}),), seed=0)


def test_canonical_json_ignores_key_order():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})


def test_run_id_is_stable_and_sensitive():
    assert make_spec().run_id == make_spec().run_id
    assert make_spec(beta=0.1).run_id != make_spec(beta=0.2).run_id
    assert len(make_spec().run_id) == 16
    # a plugin version bump changes the id: new behaviour never reuses old results
    bumped = make_spec().model_copy(update={"defence": PluginSpec(name="none", version="2", params={})})
    assert bumped.run_id != make_spec().run_id


def test_stable_hash_known_value():
    # pinned: a change here silently invalidates every cache and run id
    assert stable_hash({"a": 1}) == "015abd7f5cc57a2d"


def test_parse_overrides_types_and_nesting():
    out = parse_overrides(["defence.beta=1e-3", "attack.loss_on=answer", "defence.flag=true", "defence.x.y=[1,2]"])
    assert out["defence"] == {"beta": 0.001, "flag": True, "x": {"y": [1, 2]}}
    assert out["attack"] == {"loss_on": "answer"}


def test_set_text_with_a_backslash_escape_is_an_error_naming_the_json_form():
    with pytest.raises(ConfigError) as exc:
        parse_overrides([r"suite.second_judge_prefix=\n\n"])
    msg = str(exc.value)
    assert """--set 'suite.second_judge_prefix="\\n\\n"' for the characters""" in msg
    assert """--set 'suite.second_judge_prefix="\\\\n\\\\n"' for the backslashes as typed""" in msg
    # Each suggested form parses to what it says.
    assert parse_overrides(['suite.p="\\n\\n"'])["suite"] == {"p": "\n\n"}
    assert parse_overrides(['suite.p="\\\\n\\\\n"'])["suite"] == {"p": "\\n\\n"}
    for escape in (r"\t", r"\\", r'\"', r"\u00e9", r"\/"):
        with pytest.raises(ConfigError, match="holds the escape"):
            parse_overrides([f"suite.x=a{escape}b"])
    # Not an escape JSON knows (a regex, a Windows folder without one): a plain string, as before.
    assert parse_overrides([r"suite.x=\d+", r"suite.y=C:\data"])["suite"] == {"x": r"\d+", "y": r"C:\data"}
    with pytest.raises(ConfigError, match=r"for the backslashes as typed$"):  # no valid JSON for the characters
        parse_overrides([r'suite.x=say "hi"\n'])


@pytest.mark.parametrize("bad", ["defence", "defence.beta", "nope.beta=1", "=1"])
def test_parse_overrides_rejects_malformed(bad):
    with pytest.raises(ConfigError):
        parse_overrides([bad])


def test_validate_config_names_every_bad_field():
    from attacks.sft import Config

    with pytest.raises(ConfigError) as exc:
        validate_config("attack 'sft-1k'", Config, {"lr": "abc", "epochs": 0, "colour": "red"})
    msg = str(exc.value)
    assert "lr:" in msg and "'abc'" in msg and "epochs:" in msg and "colour: unknown field" in msg
    assert "\n" not in msg
