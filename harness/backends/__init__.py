"""Generation backends beyond the built-in `hf` one. `harness.generate.BACKENDS` is the only lookup."""
