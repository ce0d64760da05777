"""Starting and stopping Vigil's servers as child processes: the demo, the tests and the
benchmarks launch the BentoML endpoint the same way, through :func:`serve_endpoint`."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port(preferred: int) -> int:
    for port in [preferred] + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return s.getsockname()[1]
            except OSError:
                continue
    raise RuntimeError("no free port")


def wait_http(url: str, timeout: float, proc: subprocess.Popen, what: str, log_file: Path) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see {log_file}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready at {url} after {timeout:.0f}s; see {log_file}")


def start(cmd: list[str], env: dict, log_file: Path) -> subprocess.Popen:
    """A server in a session of its own (so :func:`stop` can end its whole family), output to ``log_file``."""
    with open(log_file, "a") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop(proc: subprocess.Popen, timeout: float = 20) -> None:
    """Stop a server and everything it spawned (BentoML's workers run in sessions of their own)."""
    import psutil

    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    _, alive = psutil.wait_procs(family, timeout=5)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def endpoint_command(port: int) -> list[str]:
    """``bentoml serve`` for Vigil's service on loopback (never beyond 127.0.0.1 by default)."""
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:FraudScorer", "--host", "127.0.0.1",
            "--port", str(port), "--working-dir", str(ROOT)]


def endpoint_env(root: Path, base: dict | None = None, extra: dict | None = None) -> dict:
    """The environment an endpoint on the state folder ``root`` needs."""
    env = dict(os.environ if base is None else base)
    pythonpath = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.update({"VIGIL_HOME": str(root), "BENTOML_HOME": str(Path(root) / "bentoml"), "PYTHONPATH": pythonpath})
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")  # BentoML's usage tracking calls home; a user opts in, not out
    return {**env, **(extra or {})}


@contextlib.contextmanager
def serve_endpoint(root: Path, log_file: Path, port: int = 0, env: dict | None = None,
                   timeout: float = 120) -> Iterator[tuple[str, subprocess.Popen]]:
    """The real BentoML server for the state folder ``root``, ready (``/readyz`` 200) when the
    block starts and stopped with everything it spawned when it ends. Yields (url, process)."""
    port = free_port(port)
    proc = start(endpoint_command(port), env or endpoint_env(root), log_file)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz", timeout, proc, "BentoML endpoint", log_file)
        yield url, proc
    finally:
        stop(proc)
