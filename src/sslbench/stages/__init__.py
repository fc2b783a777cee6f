"""Thin Hydra entry points, one per DVC stage: `main()` -> `run(cfg) -> dict` -> library calls."""
