"""Training runs on disk: the run-directory layout, what a run's files say, and the housekeeping
of ``python -m diffusion_lit.runs`` (list, compare, prune)."""
