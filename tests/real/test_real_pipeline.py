"""End to end on random checkpoints of eight real architectures through the BeaverTails suites, pointed at local
files: every defence and attack across the architectures, `--model PATH`, a DeBERTa-v2 classifier judge and a
generative second judge, refusal pairing, ViGGO trainability then an attack, and (on the hub-id path) lm-eval stability.

The judges score random text, so the numbers mean nothing; what is asserted is that the pipeline runs, the
records are complete and typed, and the evidence says the splits are disjoint."""

import json

import pytest

from harness import registry
from harness.results.records import read_record, record_path
from harness.store.artifacts import Store
from tests.conftest import REPO, harness
from tests.real import builders
from tests.real.conftest import HUB_ID, suite_sets

pytestmark = pytest.mark.slow
RUNS = {"qwen2": ("beavertails-qwen-0.5b", ["suite.prompt=chat"]),
        **{arch: ("beavertails-llama2", []) for arch in ("llama", "mistral", "phi3", "gemma2", "gpt_neox", "opt",
                                                          "gpt2")}}


# One whole run per architecture, each plugin in its own process. Every plugin trains on every architecture in
# test_architectures.py; here the pairs cover every way a stage's output travels through the pipeline: a defence
# that returns nothing (the base), a full model, a LoRA adapter, or a service adapter kept back for every fine-tune
# (Security Vectors, on Phi-3: the attention input projections, since peft names no default there); an attack that
# trains full weights, a LoRA adapter (on an adapter), on declared harmless data (`reads`), or nothing but how the
# model is asked (a query).
PAIRS = {"llama": ("rr", "lora-1k"), "qwen2": ("booster", "poison-10"), "mistral": ("tar", "forced-prefix"),
         "phi3": ("security-vectors", "sft-250"), "gemma2": ("vaccine", "best-of-n"),
         "gpt_neox": ("repnoise", "benign-250"), "opt": ("none", "retain-ft-250"),
         "gpt2": ("adversarial-loss", "sft-1k")}
HARMLESS_ROWS = 4  # the retain split of these small suites: an attack that trains on it takes this many rows


def test_the_pairs_cover_every_output_path():
    from harness.generation.query import QueryFields

    attacks = [registry.get("attack", a) for _, a in PAIRS.values()]
    assert set(PAIRS) == set(RUNS)
    assert any(a.reads for a in attacks) and any(a.config.model_fields.get("lora") for a in attacks)
    assert any(issubclass(a.config, QueryFields) for a in attacks)
    assert {"none", "rr", "security-vectors"} <= {d for d, _ in PAIRS.values()}  # None; an adapter; one kept back


@pytest.mark.parametrize("arch", list(RUNS))
def test_the_whole_pipeline_runs_on_a_real_architecture(arch, ckpts, judge_ckpt, files, tmp_path):
    """One whole run per architecture (each plugin in its own process), with its pair of PAIRS."""
    from harness.pipeline import run
    from harness.resolve import resolve

    defence, attack = PAIRS[arch]
    suite_name, extra = RUNS[arch]
    sets = [*suite_sets(files, judge_ckpt, second_judge=ckpts["llama"]), *extra]
    store, results = Store(tmp_path / "home"), tmp_path / "results"
    if registry.get("attack", attack).reads:
        sets.append(f"attack.samples={HARMLESS_ROWS}")
    spec, suite, overrides = resolve(suite_name, defence, attack, sets=sets, model=str(ckpts[arch]))
    record, cached = run(spec, suite, overrides, store=store, results_dir=results)
    assert not cached and (record.spec.defence.name, record.spec.attack.name) == (defence, attack)
    parsed = read_record(record_path(results, suite.name, suite.protocol_version, record.run_id))
    assert parsed == record
    check_record(parsed, arch, ckpts)
    kept = store.path("models", record.provenance.stages["defend"].key) / "service_adapter"
    assert kept.is_dir() == (defence == "security-vectors")  # the adapter kept back, beside the released model
    assert record.threat_model == ("fine-tuning service" if defence == "security-vectors" else "open weights")


def check_record(record, arch, ckpts):
    ev, prov, m = record.evidence, record.provenance, record.metrics
    zero = {"defence&attack": 0, "defence&eval": 0, "attack&eval": 0}
    assert ev.prompt_overlap == zero and ev.answer_overlap == zero
    assert ev.sizes == {"defence": 8, "attack": 8, "eval": 8}
    assert ev.data["duplicate_pairs_dropped_train"] == 36 and ev.data["multi_category_rows"] > 0
    assert ev.data["pairing_questions"] == 16 and ev.data["pairing_rows"] == 8
    assert prov.model.id == str(ckpts[arch]) and prov.model.source == "local" and prov.model.dtype == "float32"
    assert prov.model.revision == record.spec.model.revision and not prov.model.trust_remote_code
    assert [j.split(":")[0] for j in prov.judge_ids] == ["hf-classifier", "generative-safety"]
    for evaluation in (m.base, m.pre_attack, m.post_attack):
        panel = ["deberta-beavertails", "generative-safety"]  # the primary: the reference preset (a local copy)
        assert evaluation.harmfulness.n == 8 and list(evaluation.by_judge) == panel
        assert evaluation.judge_agreement.other == "generative-safety" and evaluation.judge_agreement.n == 8
        assert evaluation.panel.primary == panel[0] and evaluation.panel.judges == panel
        assert [(p.a, p.b, p.n) for p in evaluation.panel.pairs] == [(*panel, 8)]
        assert evaluation.panel.pairs[0].agreement == evaluation.judge_agreement.agreement
    trains = "samples" in registry.get("attack", record.spec.attack.name).budget
    if trains:  # a harmfulness point after every step (curve_every 1)
        assert m.resistance.steps >= 1 and [s for s, _ in m.resistance.curve] == list(range(m.resistance.steps + 1))
    else:  # a query attack trains nothing: the curve is before and after
        assert m.post_attack.query is not None and m.resistance.curve[-1][1] == m.post_attack.harmfulness.mean
    assert m.trainability.task == "gem-viggo" and m.trainability.then_attack.attack == "sft-1k"
    assert m.stability.perplexity.base > 0 and m.stability.lm_eval is None
    if trains:
        reads = registry.get("attack", record.spec.attack.name).reads
        assert record.budget.samples == (HARMLESS_ROWS if reads else 8) and record.budget.lr == 3e-5


def test_hub_id_offline_prepare_then_run(hf_home, judge_ckpt, files, tmp_path):
    """`harness prepare` pairs the refusals of a model named by hub id (resolved offline from a temporary
    HF cache); `harness run` finds them cached, records the snapshot's commit, and runs lm-eval on a local task."""
    home, commit = hf_home
    env = {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    sets = [*suite_sets(files, judge_ckpt), "suite.prompt=chat", "suite.lm_eval_tasks=[\"tiny_mc\"]",
            f"suite.lm_eval_include={REPO / 'tests/fixtures/lm_eval_task'}", "suite.lm_eval_builtin=false"]
    args = [x for s in sets for x in ("--set", s)]
    prepared = harness("prepare", "beavertails-qwen-0.5b", "--model", HUB_ID, *args, "--json", home=tmp_path / "h",
                       check=True, env=env)
    report = json.loads(prepared.stdout)
    assert report["model"] == {"id": HUB_ID, "revision": commit, "source": "hub", "dtype": "float32",
                               "trust_remote_code": False}
    assert report["pairing"]["pairing_rows"] == 8
    proc = harness("run", "--suite", "beavertails-qwen-0.5b", "--model", HUB_ID, "--defence", "repnoise", "--attack",
                   "sft-1k", *args, "--results-dir", str(tmp_path / "r"), "--json", home=tmp_path / "h", check=True,
                   env=env)
    record = json.loads(proc.stdout)
    assert record["spec"]["model"] == {"id": HUB_ID, "revision": commit, "dtype": "float32"}
    assert record["provenance"]["stages"]["pairing"]["cached"]
    assert set(record["metrics"]["stability"]["lm_eval"]["tiny_mc"]) >= {"acc"}
    assert record["spec"]["suite"]["params"]["prompt"] == "chat"


@pytest.mark.parametrize("case, message", [
    ("missing", "error: model folder not found"),
    ("classifier", "is not a causal LM"),
    ("label", "has no label 'toxic'"),
    ("columns", "lacks the column(s) category, is_safe, response"),
    ("no-attention", "defence 'vaccine' cannot run on MambaForCausalLM"),
])
def test_bad_input_is_one_line_and_exit_2(case, message, ckpts, judge_ckpt, files, tmp_path):
    import pandas as pd

    model = {"missing": str(tmp_path / "absent"), "classifier": str(judge_ckpt)}.get(case, str(ckpts["gpt2"]))
    if case == "no-attention":  # refused on its structure before refusal pairing (no pairing artifact below)
        model = str(builders.save_mamba(tmp_path / "mamba"))
    sets = suite_sets(files, judge_ckpt)
    if case == "label":
        sets.append("suite.judge_label=toxic")
    if case == "columns":
        pd.DataFrame({"prompt": ["q"], "answer": ["a"]}).to_parquet(tmp_path / "bad.parquet")
        sets.append(f"suite.dataset={tmp_path / 'bad.parquet'}")
    defence = "vaccine" if case == "no-attention" else "none"
    proc = harness("run", "--suite", "beavertails-llama2", "--model", model, "--defence", defence, "--attack",
                   "sft-1k", *[x for s in sets for x in ("--set", s)], "--results-dir", str(tmp_path / "r"),
                   home=tmp_path / "h")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "r").exists() and not list((tmp_path / "h").glob("pairing*/*"))
