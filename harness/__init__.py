"""Immunization Bench: a harness for defences against harmful fine-tuning attacks.

Importing this package is cheap on purpose (no torch): `harness list` and `--help` rely on it.
"""

__version__ = "0.1.0"
