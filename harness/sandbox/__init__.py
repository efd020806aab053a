"""A defence or an attack in its own process, with only its inputs: `launch` (the stage's side), `worker` (the
plugin's process), `guard` (what the process may not reach) and `inspection` (what `plugins check` measures of
the in-memory model)."""
