import os

# Tests measure numbers, not thread scheduling: one thread keeps them fast and reproducible.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
