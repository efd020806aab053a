"""Security Vectors through the whole pipeline on the smoke world: the adapter is kept in the defended model's
artifact, attached while the attack and the trainability fine-tune train, absent at every evaluation; the record,
the report and the tables name the threat model."""

import json

from safetensors.torch import load_file

from harness.stages import MODELS
from tests.conftest import harness


def run(home, results, defence):
    proc = harness("run", "--defence", defence, "--attack", "sft-250", "--set", "suite.size=smoke", "--results-dir",
                   str(results), "--json", home=home, check=True)
    return json.loads(proc.stdout[proc.stdout.index("{"):proc.stdout.rindex("}") + 1])


def test_security_vectors_end_to_end(smoke_base, home, tmp_path):
    sv, none = run(home, tmp_path, "security-vectors"), run(home, tmp_path, "none")
    assert (sv["threat_model"], none["threat_model"]) == ("fine-tuning service", "open weights")
    stages, plain = sv["provenance"]["stages"], none["provenance"]["stages"]
    defended = home / MODELS / stages["defend"]["key"]
    assert (defended / "service_adapter" / "adapter_config.json").is_file()
    assert not (defended / "model.safetensors").exists()  # the released model is the base
    # Evaluations never see the adapter: the defended model's are the base's own (cached, shared with `none`).
    assert stages["pre_attack.generate"]["key"] == plain["pre_attack.generate"]["key"]
    assert sv["metrics"]["pre_attack"]["harmfulness"] == none["metrics"]["pre_attack"]["harmfulness"]
    # The same attack (rows, seed, budget) on the same released weights trained otherwise: through the adapter.
    attacked = [load_file(str(home / MODELS / s["attack"]["key"] / "model.safetensors")) for s in (stages, plain)]
    assert attacked[0].keys() == attacked[1].keys()  # no adapter weight saved into the attacked model
    assert any(not (attacked[0][k] == attacked[1][k]).all() for k in attacked[0])
    # The trainability fine-tune of the defended model is its own stage (with the adapter), not the base's.
    assert stages["trainability.defended"]["key"] != plain["trainability.defended"]["key"]
    report = harness("report", "--results-dir", str(tmp_path), "--set", "suite.size=smoke", home=home, check=True)
    assert "| security-vectors [fine-tuning service] |" in report.stdout
    assert "[fine-tuning service]: another threat model" in report.stdout
