"""Real servers started by the tests on 127.0.0.1, on ports chosen free, and stopped whatever happens."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except OSError:
        return False


@contextmanager
def started(command: list[str], ready: Callable[[], bool], log: Path, timeout: float,
            env: dict | None = None) -> Iterator[subprocess.Popen]:
    """Run ``command`` in its own process group until ``ready()``; stop the whole group on the way out."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   env={**os.environ, **(env or {})})
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[0]} did not start in {timeout:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            process.wait()


@contextmanager
def chroma_server(folder: Path) -> Iterator[str]:
    """``chroma run`` on a free port, keeping its data in ``folder``; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(BIN / "chroma"), "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)]
    with started(command, lambda: answers(f"{url}/api/v2/heartbeat"), folder.parent / f"chroma-{port}.log", 60):
        yield url
