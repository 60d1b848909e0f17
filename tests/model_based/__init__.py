"""Randomized (model-based) operator tests: seeded step sequences (generate, steps), a driver that runs
them against the operator and a GPU twin and settles (driver, twin), invariants checked from outside
(invariants, gpu_facts), delta-debugging shrinking (shrink) and seed reports (session). Used by
tests/integration/test_model_based.py (the CI budget) and benchmarks/operator_soak.py (longer soaks)."""
