"""What each stage may read of the suite's data: the one declaration (`harness.data.views` builds the views from
it; the registry checks a plugin's `reads` against it). Constants only, so any module may import it."""

STAGE_SPLITS: dict[str, tuple[str, ...]] = {
    "defence": ("defence", "retain"),
    "attack": ("attack",),
    # The attack a trainability protocol runs on the fine-tuned model: the attacker's data, as in the attack stage.
    "trainability_attack": ("attack",),
    # The harness's own measurements: the held-out prompts, the harmless QA, the harmless fine-tuning task.
    # `attack`: its answers, in random order, answer the held-out prompts for the random-answer floor
    "evaluation": ("eval", "harmless_eval", "eval_visible", "attack", "trainability_train", "trainability_test"),
}
# Splits a plugin of a stage may also declare it reads (`register_attack(..., reads=("retain",))`): an attack whose
# kind trains on harmless data (benign fine-tuning, an identity shift, a poisoned user task, retain-set fine-tuning)
# reads the harmless retain rows. A defence already has them; nothing else is declarable.
DECLARABLE: dict[str, tuple[str, ...]] = {"attack": ("retain",), "trainability_attack": ("retain",)}
# How the suite built its data (rows read, duplicates dropped, overlaps): numbers, readable by every stage.
METADATA = ("evidence",)
