"""Training mechanics shared by every defence and attack: the loop, collators, paired batches, LoRA,
hooks, teacher-forced NLL."""
