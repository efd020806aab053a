"""Tuning on equal terms: every defence gets the same trial budget over its declared space."""
