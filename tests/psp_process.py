"""The PSP simulator as a process of the tests' own: ``python -m shardpay psp-sim``, restartable."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import httpx


class SimProcess:
    """``python -m shardpay psp-sim`` with its stdout in a file (the JSON log lines), restartable."""

    def __init__(self, env: dict[str, str], log_path: str) -> None:
        self.env = env
        self.log_path = log_path
        self.url = f"http://127.0.0.1:{env['SHARDPAY_PSP_PORT']}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "shardpay", "psp-sim"], env=self.env, stdout=log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"psp-sim exited with {self.proc.returncode}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/sim/faults", timeout=0.5).status_code == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError("psp-sim did not start within 30 s")

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
