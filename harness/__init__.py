"""Immunization Bench: a harness for defences against harmful fine-tuning attacks.

Importing this package is cheap on purpose (no torch): `harness list` and `--help` rely on it.
"""

__version__ = "0.1.0"

from harness import lean_imports

lean_imports.install()  # transformers without scikit-learn (harness/lean_imports.py)
