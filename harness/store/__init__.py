"""The content-addressed artifact store: artifacts and their manifests, locks, hygiene (ls, gc)."""
