"""Prometheus metrics, in one place so every part of corelane names them the same way."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

SWEEPS = Counter("corelane_sweeps_total", "Collector sweeps of this host")
SWEEP_SECONDS = Histogram("corelane_sweep_seconds", "Time one sweep of host, processes and "
                          "containers takes", buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5))
EVENTS_PUBLISHED = Counter("corelane_events_published_total", "Messages sent to the broker",
                           ["type"])
DEAD_LETTERS = Counter("corelane_dead_letters_total", "Unreadable messages sent to dead-letter",
                       ["topic"])
