"""Start real SecantusDB and redis-server processes on loopback (tests, local cluster, benchmarks)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_port(port: int, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        if port_in_use(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout} s")


@dataclass
class ServerProcess:
    name: str
    argv: list[str]
    port: int
    log_path: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self, timeout: float = 60.0) -> ServerProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, timeout, self.proc)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


def secantus_server(data_dir: Path, port: int | None = None, *extra: str) -> ServerProcess:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("secantusd-py", path=os.path.dirname(sys.executable)) or "secantusd-py"
    argv = [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(data_dir / "db")]
    argv += ["--log-level", "WARNING", "--noop-heartbeat-seconds", "5", *extra]
    return ServerProcess("secantusdb", argv, port, data_dir / "secantusdb.log")


def redis_server(data_dir: Path, port: int | None = None, password: str | None = None) -> ServerProcess:
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server not found: install Debian's redis-server package (scripts/setup)")
    argv = [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data_dir), "--save", ""]
    argv += ["--appendonly", "yes", "--maxmemory-policy", "noeviction"]
    if password:
        argv += ["--requirepass", password]
    return ServerProcess("redis", argv, port, data_dir / "redis.log")


def mongo_url(port: int) -> str:
    return f"mongodb://127.0.0.1:{port}/?directConnection=true"
