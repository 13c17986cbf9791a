"""Replay: a window of a host's history run again under a policy, and compared.

- ``sides``  the two things compared: a configuration replayed (the live agents' own
             classifier and planner, fed recorded events) and what the history recorded
- ``report`` the sweep-by-sweep comparison and the per-tier report it adds up to
- ``run``    a whole replay: the state at the window's start, the window, the report
- ``render`` the report as deterministic JSON and as one self-contained HTML page
"""
