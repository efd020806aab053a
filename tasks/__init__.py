"""Datasets in one schema (BeaverTails': prompt, response, category, is_safe) and the suites built on them."""
