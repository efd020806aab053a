"""Processes the harness starts: forked from a warm interpreter where it can, ended with their parent."""
