"""Sweeps: grid files, the DAG of jobs, executors (local processes, Ray) and what a sweep prints."""
