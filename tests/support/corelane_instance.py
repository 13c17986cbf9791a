"""`corelane up` as a user runs it, on the test broker, with its own files and ports."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]



def recording(health: dict) -> bool:
    """Whether a health document shows an instance that sweeps and records."""
    parts = health["parts"]
    return parts["recorder"]["stats"]["batches"] >= 1 and \
        parts["collector"]["stats"]["sweeps"] >= 2


class Instance:
    """`corelane up` as a user runs it, on the test broker, with its own files."""

    def __init__(self, tmp: Path, bootstrap: str, prefix: str, broker: str | None = None,
                 dry_run: bool = True, up_args: tuple[str, ...] = (), kafka_extra: str = "",
                 env: dict[str, str] | None = None, **sections: str) -> None:
        """``broker`` is the kafka.broker section, ``kafka_extra`` more keys of the kafka
        section (``"partitions: 4"``) and ``sections`` are other top-level sections, each as
        a YAML flow mapping; ``up_args`` go to ``corelane up``, ``env`` to its environment
        (``CORELANE_HOST``). A dry run (the default) changes nothing on the host."""
        tmp.mkdir(parents=True, exist_ok=True)
        self.prefix = prefix
        self.api = f"127.0.0.1:{free_port()}"
        self.db = tmp / "history.duckdb"
        self.config = config = tmp / "corelane.yml"
        kafka = f"topic_prefix: '{prefix}', chunk_rows: 40" + (f", broker: {broker}" if broker else "") \
            + (f", {kafka_extra}" if kafka_extra else "")
        config.write_text(f"kafka: {{{kafka}}}\n" + "".join(
            f"{name}: {value}\n" for name, value in sections.items()))
        # Every command a test runs against this instance reads the same configuration.
        self.env = {**os.environ, "PYTHONFAULTHANDLER": "1", "CORELANE_CONFIG": str(config),
                    "CORELANE_KAFKA": bootstrap, "CORELANE_API": self.api,
                    "CORELANE_HOME": str(tmp), "CORELANE_DB": str(self.db), **(env or {})}
        self.cmd = [sys.executable, "-m", "corelane", "up", *(["--dry-run"] if dry_run else []),
                    *up_args]
        self.proc: subprocess.Popen[str] | None = None
        # A file, not a pipe: a pipe nobody reads while it runs fills up, and then every
        # log line blocks the whole process.
        self.log = tmp / "corelane.log"

    def start(self) -> None:
        with open(self.log, "a") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=self.env, text=True,
                                         stdout=subprocess.DEVNULL, stderr=log)

    def health(self) -> dict | None:
        """Its health document, or None while it does not answer."""
        try:
            return httpx.get(f"http://{self.api}/api/v1/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_recording(self, timeout_s: float = 60) -> dict:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_text()[-5000:]
            try:
                health = httpx.get(f"http://{self.api}/api/v1/health", timeout=2).json()
                if recording(health):
                    return health
            except (httpx.HTTPError, KeyError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"corelane did not start recording in time:\n"
                             f"{self.log_text()[-5000:]}")

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Another corelane command, with this instance's configuration and files."""
        return subprocess.run([sys.executable, "-m", "corelane", *args], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=60)      # a loaded machine can take its time to reap it

    def terminate(self) -> str:
        """Stop it as a user would; returns what it logged."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            # Its stacks go to the log (faulthandler), so a hang says where it is.
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=10)
            raise AssertionError(f"corelane did not stop on SIGTERM:\n{self.log_text()[-20000:]}")
        assert self.proc.returncode == 0, self.log_text()[-5000:]
        return self.log_text()
