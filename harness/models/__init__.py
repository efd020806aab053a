"""Models: checkpoint I/O, where a checkpoint lives (hub, folder, store), peak memory."""
