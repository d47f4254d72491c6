"""Helpers for the durable-jobs tests: ``ldm3d worker`` child processes and polling (fixtures in conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HEARTBEAT_S = "3"  # tests fail over in ~4 s; the default (15 s) is what bench/queue.py measures


class Worker:
    """``ldm3d worker`` as a child process; ready once it printed its ``ready`` line."""

    def __init__(self, url: str, *args: str):
        cmd = [sys.executable, "-m", "ldm3d", "worker", "--queue", url, "--heartbeat-timeout", HEARTBEAT_S, *args]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="ldm3d-worker-", suffix=".log")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.log, text=True, cwd=ROOT,
                                     env=os.environ.copy())
        line = self.proc.stdout.readline()
        if "ready" not in line:
            self.proc.kill()
            raise RuntimeError(f"`{' '.join(cmd)}` did not start: {line}{self.text()[-3000:]}")

    def text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()


def wait_for(predicate, timeout: float, what: str, poll_s: float = 0.02):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
