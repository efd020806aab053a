"""The data contract: what each stage may read, harm subsets, refusal pairing, the leakage audit."""
