"""BeaverTails: the loader, its task and the real-model suites."""
