"""Feature vectors of a few behaviours, with noise, for the model's unit tests."""
from __future__ import annotations

import random

from agents.classification.features import FEATURES

IDX = {name: i for i, name in enumerate(FEATURES)}


def behaviour_vector(rng: random.Random, cls: str) -> list[float]:
    """A hog (``compute_batch``), a frequent sleeper (``latency_critical``) or, for any
    other class, a writer (``io_batch``)."""
    v = [0.0] * len(FEATURES)
    if cls == "compute_batch":
        v[IDX["cpu_mean"]] = rng.uniform(0.8, 1.0)
        v[IDX["wakeups_s"]] = rng.uniform(0, 20)
        v[IDX["invol_s"]] = rng.uniform(50, 500)
    elif cls == "latency_critical":
        v[IDX["cpu_mean"]] = rng.uniform(0.0, 0.2)
        v[IDX["wakeups_s"]] = rng.uniform(500, 5000)
        v[IDX["invol_s"]] = rng.uniform(0, 10)
    else:
        v[IDX["cpu_mean"]] = rng.uniform(0.1, 0.3)
        v[IDX["wakeups_s"]] = rng.uniform(20, 100)
        v[IDX["write_bps"]] = rng.uniform(5e7, 2e8)
    v[IDX["cpu_peak"]] = v[IDX["cpu_mean"]] * 1.1
    return v
