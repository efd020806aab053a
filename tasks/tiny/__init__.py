"""The offline `tiny` suite: a synthetic harm world, a small Llama that learns it, and its judges."""
