"""Real gateway processes for end-to-end and cluster tests.

Each is started with `bin/serve` (what `make run` and the Docker image run)
on a free port, with its own database and Redis key prefix.
"""

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Gateway:
    """One running gateway process."""

    port: int
    proc: subprocess.Popen
    log_path: Path
    env: dict = field(repr=False)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws/"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gateway(tmp_dir: Path, **env_overrides: str) -> Gateway:
    """Start `bin/serve` on a free port and wait until /health answers."""
    port = free_port()
    tmp_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DEBUG": "true",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PYTHON": sys.executable,
        "DATABASE_URL": f"sqlite:///{tmp_dir / 'db.sqlite3'}",
        "STATIC_ROOT": str(tmp_dir / "static"),
        "REDIS_URL": "",
        "LOG_LEVEL": "WARNING",
        **env_overrides,
    }
    log_path = tmp_dir / f"gateway-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(ROOT / "bin" / "serve")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    gateway = Gateway(port, proc, log_path, env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gateway.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{gateway.http}/health", timeout=1).status_code == 200:
                return gateway
        time.sleep(0.2)
    gateway.stop(signal.SIGKILL)
    raise RuntimeError(f"gateway did not answer /health in time:\n{gateway.log()}")


def redis_env() -> dict:
    """Redis settings for one test run: its own key prefix, so runs never collide.

    Fails loudly when Redis is not there: these tests never skip.
    """
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise RuntimeError(f"Redis is required at {REDIS_URL}: {exc}") from exc
    finally:
        client.close()
    return {"REDIS_URL": REDIS_URL, "REDIS_PREFIX": f"t{uuid.uuid4().hex[:10]}"}


def clear_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def postgres_database():
    """A fresh PostgreSQL database for one test run; dropped afterwards.

    Fails loudly when PostgreSQL is not there: these tests never skip.
    """
    name = f"rt_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True)
    except psycopg.OperationalError as exc:
        raise RuntimeError(f"PostgreSQL is required at {POSTGRES_ADMIN_URL}: {exc}") from exc
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
            yield f"{base}/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
