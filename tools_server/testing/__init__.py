"""Helpers for tests and benchmarks: simulated model-backed tools (`sim_tools`) and
random-weight transformers checkpoints built locally (`random_checkpoints`). Not used by
the service itself."""
