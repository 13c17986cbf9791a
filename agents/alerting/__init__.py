"""Alerts from typed rules: pure, time passed in.

``figures`` folds a host's events (host samples, process sweeps, plans) into the figures
the rules watch, one per signal and subject; ``book`` turns figures over time into alert
transitions, each rule with its threshold, duration and hysteresis. The alerter agent
(``agents.alerter``) feeds both from the bus and publishes what opens and resolves.
"""
