"""A server process of the topology: started in a session of its own (so that Ctrl-C reaches only the runner,
which stops everything in order), its output in ``log/<name>.log``, stopped with SIGTERM and then SIGKILL."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

Ready = Callable[[], Awaitable[bool]]


class StartFailed(RuntimeError):
    """A server exited at once or did not become ready in time; the message names it and its log."""


@dataclass
class Server:
    name: str
    argv: list[str]
    log: Path
    ready: Ready
    user: str | None = None
    env: dict[str, str] | None = None
    cwd: Path | None = None
    grace: float = 20.0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.running and self.proc is not None else None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            out.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(self.argv)}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, user=self.user,
                env=self.env, cwd=self.cwd, start_new_session=True,
            )  # fmt: skip

    async def start(self, within: float = 60.0) -> None:
        """Spawn and wait until ready; StartFailed if it exits or does not get there ``within`` seconds."""
        if not self.running:
            self.spawn()
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if not self.running:
                raise StartFailed(f"{self.name} exited with {self._returncode()}; see {self.log}")
            if await self.ready():
                return
            await asyncio.sleep(0.2)
        raise StartFailed(f"{self.name} was not ready within {within:g} s; see {self.log}")

    def _returncode(self) -> int | None:
        return None if self.proc is None else self.proc.returncode

    def signal(self, signum: int) -> bool:
        if self.proc is None or not self.running:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signum)
        return True

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if not self.signal(signal.SIGTERM):
            return
        try:
            await asyncio.wait_for(asyncio.to_thread(self._wait), self.grace)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await asyncio.to_thread(self._wait)

    def _wait(self) -> None:
        # Polled rather than one blocking wait, so that a wait given up on (the grace period) leaves no thread.
        while self.proc is not None and self.proc.poll() is None:
            time.sleep(0.05)


def read_pid(path: Path) -> int | None:
    """The pid on the first line of a pid file (PostgreSQL's ``postmaster.pid`` too), if that process lives."""
    try:
        pid = int(path.read_text().split("\n", 1)[0].strip())
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return pid
