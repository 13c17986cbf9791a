"""Progress of the long steps on a terminal: fetching the broker's jars (a spinner with the
artifacts Maven has fetched and the time it took) and a broker's cold start (a bar of the
seconds waited against the start timeout, full when the broker answers).

Elsewhere (logs, CI) it draws nothing and the commands' plain lines stand as they are.
Callbacks may come from a worker thread (``corelane up`` starts the broker in one); rich's
progress takes updates from any thread.
"""
from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import (BarColumn, Progress, SpinnerColumn, TaskID, TextColumn,
                           TimeElapsedColumn)

from pipeline.kafka.broker import MavenStep

FETCHING = "resolving the Kafka broker's jars with Maven"


class BrokerProgress:
    """A ``StartProgress`` (``pipeline.kafka.broker``) that draws on ``console`` when it is
    a terminal; use it as a context manager, so the display ends with the command."""

    def __init__(self, console: Console, broker: str = "the Kafka broker") -> None:
        """``broker`` names it in the bar, e.g. "the Kafka broker at 127.0.0.1:9092"."""
        self.console = console
        self.broker = broker
        self._bars: Progress | None = None
        self._fetch: TaskID | None = None
        self._start: TaskID | None = None
        self._timeout_s = 0.0
        self._downloaded = self._bytes = self._copied = 0

    def __enter__(self) -> BrokerProgress:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _progress(self) -> Progress | None:
        if not self.console.is_terminal:
            return None
        if self._bars is None:
            self._bars = Progress(SpinnerColumn(finished_text="[green]✓[/]"),
                                  TextColumn("{task.description}"), BarColumn(),
                                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(),
                                  console=self.console)
            self._bars.start()
        return self._bars

    def maven(self, step: MavenStep) -> None:
        bars = self._progress()
        if bars is None:
            return
        if self._fetch is None:
            self._fetch = bars.add_task(FETCHING, total=None, detail="")
        if step.action == "downloaded":
            self._downloaded += 1
            self._bytes += step.size_bytes or 0
        elif step.action == "copied":
            self._copied += 1
        bars.update(self._fetch, detail=f"{self._downloaded} files "
                                        f"({self._bytes / 1e6:.1f} MB) fetched, "
                                        f"{self._copied} jars in place · {step.artifact}",
                    refresh=True)

    def fetched(self) -> None:
        """The jars are in place: the spinner stops, the counts stay."""
        if self._bars is not None and self._fetch is not None:
            self._bars.update(self._fetch, total=1, completed=1, refresh=True)

    def waiting(self, elapsed_s: float, timeout_s: float) -> None:
        bars = self._progress()
        if bars is None:
            return
        self.fetched()
        if self._start is None:
            self._start = bars.add_task(f"starting {self.broker}", total=timeout_s,
                                        detail="")
            self._timeout_s = timeout_s
        bars.update(self._start, completed=min(elapsed_s, timeout_s),
                    detail=f"{elapsed_s:.0f} of at most {timeout_s:.0f} s", refresh=True)

    def answered(self) -> None:
        if self._bars is not None and self._start is not None:
            self._bars.update(self._start, description=f"{self.broker} answers",
                              completed=self._timeout_s, detail="")
        self.close()

    def close(self) -> None:
        """End the display; what it showed last stays on the screen."""
        if self._bars is not None:
            self._bars.stop()
        self._bars = self._fetch = self._start = None
