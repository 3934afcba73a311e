"""``telescope serve`` in a child process, as users run it: started, awaited until SERVING, stopped with SIGTERM.

Used by the benchmark, the demo and the tests, so that each of them measures and shows the real server
process (its own interpreter and GIL), not a server thread sharing the caller's.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from telescope.server.client import Client

LISTENING = re.compile(r"listening on (\S+):(\d+)")


class ServerProcess:
    def __init__(
        self,
        data_dir: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        args: Sequence[str] = (),
        env: dict[str, str] | None = None,
        ready_timeout: float = 180.0,
        tls_ca: str | Path | None = None,
        nice: int = 0,
    ):
        self.command = [
            sys.executable, "-m", "telescope.cli.main", "serve",
            "--data", str(data_dir), "--host", host, "--port", str(port), *args,
        ]
        self.env = {**os.environ, **(env or {})}
        self.ready_timeout = ready_timeout
        self.tls_ca = tls_ca
        self.nice = nice
        self.lines: list[str] = []
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self._listening = threading.Event()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait_serving: bool = True) -> "ServerProcess":
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
            preexec_fn=(lambda: os.nice(self.nice)) if self.nice else None,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._listening.wait(self.ready_timeout) or self.port is None:
            self.kill()
            raise RuntimeError(f"server: expected 'listening on HOST:PORT' within {self.ready_timeout} s, got:\n{self.output()}")
        if wait_serving:
            with Client(self.target, tls_ca=self.tls_ca) as client:
                try:
                    client.wait_ready(self.ready_timeout)
                except TimeoutError as e:
                    self.kill()
                    raise RuntimeError(f"{e}; server output:\n{self.output()}") from None
        return self

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            found = LISTENING.search(line)
            if found and self.port is None:
                self.port = int(found.group(2))
                self._listening.set()
        self._listening.set()

    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (drain, commit, exit) and wait; returns the exit status."""
        if self.process is None:
            return 0
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"server: expected to exit within {timeout} s of SIGTERM; killed. Output:\n{self.output()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def wait_exit(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process is not None and self.process.poll() is None:
            time.sleep(0.05)
        return None if self.process is None else self.process.poll()

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        try:
            self.stop()
        finally:
            self.kill()
