"""Results: typed run records and metrics, the condition tables, the budget table, validation."""
