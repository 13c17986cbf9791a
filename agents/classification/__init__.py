"""The classifier's pure core: behaviour features, rules and labels, the online model, and
the decision that combines them. No Kafka and no /proc here: samples in, classifications
out, so the same code runs live in the classifier agent and offline in replay.

Modules:
- ``classes``  class names, tiers and the default class -> tier map
- ``features`` per-identity rolling windows of samples and the features computed from them
- ``rules``    YAML rules and explicit labels
- ``model``    the online river model, its drift detector and its snapshots
- ``sharing``  how the workers of a group merge their models (snapshots as plain numbers)
- ``decide``   labels > rules > model, with hysteresis and heartbeats; ``Classifier`` ties
               everything together for a stream of sweeps
"""
