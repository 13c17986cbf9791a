"""corelane's own priority on its host: high enough that what it places cannot starve it.

A CPU hog it has not judged yet runs at nice 0 beside it; at the same nice, on a host with
more hogs than cores, corelane would get a share of a core and react as slowly as the load
lets it. Threads and processes inherit the nice of the thread that starts them, so this is
taken once, first: the executor's threads and a broker corelane starts run at it too.
"""
from __future__ import annotations

import logging
import os

from pipeline.settings import Settings

log = logging.getLogger(__name__)


def take_own_nice(settings: Settings) -> None:
    """Run this process at ``own_nice``; says so once when it cannot (no permission)."""
    wanted = settings.own_nice
    if wanted is None:
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, wanted)
    except OSError as exc:
        log.warning("own_nice: cannot run at nice %d (%s); corelane runs at nice %d, beside "
                    "the load it places", wanted, exc.strerror,
                    os.getpriority(os.PRIO_PROCESS, 0))
