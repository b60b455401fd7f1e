"""Real gateway processes for end-to-end and cluster tests.

Each is started with `bin/serve` (what `make run` and the Docker image run)
on a free port, with its own database and Redis key prefix.
"""

import asyncio
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
from urllib.parse import urlencode

import httpx
import orjson
import psycopg
import websockets
from websockets.exceptions import ConnectionClosed

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

    def manage(self, *args: str) -> str:
        """Run a `manage.py` command on this gateway's database, as an operator
        would; the last line it printed."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return done.stdout.strip().splitlines()[-1]

    def issue_token(self, handle: str) -> str:
        """A token issued for public account `handle`, as in the admin."""
        script = (
            "from accounts.models import PublicAccount; "
            f"print(PublicAccount.objects.get(handle={handle!r}).issue_token())"
        )
        return self.manage("shell", "-c", script)

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
        # pytest-django exports tests.settings, which forces the embedded
        # backend; a gateway process runs the project's own settings.
        "DJANGO_SETTINGS_MODULE": "realtime.settings",
        "DEBUG": "true",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PYTHON": sys.executable,
        "DATABASE_URL": f"sqlite:///{tmp_dir / 'db.sqlite3'}",
        "STATIC_ROOT": str(tmp_dir / "static"),
        "REDIS_URL": "",
        "LOG_LEVEL": "WARNING",
        # Every test client is 127.0.0.1: tests of refused tokens must not
        # lock out the tests that follow them.
        "AUTH_FAILURE_LIMIT": "100000",
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


def restart_gateway(gateway: Gateway) -> None:
    """Start a stopped (or killed) `gateway` again, in place: same port, same
    environment, its log continued. Waits until /health answers."""
    assert gateway.proc.poll() is not None, "the gateway is still running"
    with open(gateway.log_path, "ab") as log:
        gateway.proc = subprocess.Popen(
            [str(ROOT / "bin" / "serve")],
            cwd=ROOT,
            env=gateway.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {gateway.proc.returncode}:\n{gateway.log()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{gateway.http}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    gateway.stop(signal.SIGKILL)
    raise RuntimeError(f"restarted gateway did not answer /health in time:\n{gateway.log()}")


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


# --- Clusters ------------------------------------------------------------------
@contextlib.contextmanager
def gateway_cluster(tmp_dir: Path, size: int = 2, **env_overrides: str):
    """`size` gateways sharing one fresh PostgreSQL database and one Redis prefix.

    Each is started after the previous one answered /health, so only the first
    migrates. Every process is stopped, the database dropped and the Redis
    prefix cleared afterwards. Fails loudly when Redis or PostgreSQL is missing.
    """
    redis_settings = redis_env()
    gateways: list[Gateway] = []
    try:
        with postgres_database() as database_url:
            shared = {"DATABASE_URL": database_url, **redis_settings, **env_overrides}
            try:
                for index in range(size):
                    gateways.append(start_gateway(tmp_dir / f"node{index}", **shared))
                yield gateways
            finally:
                for gateway in gateways:
                    gateway.stop()
    finally:
        clear_redis_prefix(redis_settings["REDIS_PREFIX"])


def join_cluster(tmp_dir: Path, member: Gateway) -> Gateway:
    """Start one more gateway with the settings (database, Redis prefix ...) of `member`."""
    own = {"PORT", "STATIC_ROOT"}
    return start_gateway(tmp_dir, **{k: v for k, v in member.env.items() if k not in own})


# --- Clients -------------------------------------------------------------------
# Bounded waits: generous for a loaded two-core machine, never open-ended.
FRAME_TIMEOUT = 10.0
# Frames that may come between the ones a test waits for, whatever it tests.
BACKGROUND_FRAMES = frozenset({"ping", "presence", "typing"})


def ws_url(gateway: Gateway, path: str = "/ws/", **params: str) -> str:
    """A WebSocket URL of `gateway`, with query parameters."""
    query = f"?{urlencode(params)}" if params else ""
    return f"ws://127.0.0.1:{gateway.port}{path}{query}"


def message_key(message_id: str) -> tuple[int, int]:
    """A message id as the integer pair it compares as."""
    ms, seq = message_id.split("-")
    return int(ms), int(seq)


class WSClient:
    """A WebSocket client that reads JSON frames with bounded waits."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.welcome: dict | None = None

    async def send(self, frame) -> None:
        """Send a dict as a JSON text frame; str and bytes go as they are."""
        if isinstance(frame, dict | list):
            frame = orjson.dumps(frame).decode()
        await self.conn.send(frame)

    async def recv(self, timeout: float = FRAME_TIMEOUT) -> dict:
        """The next frame, decoded; server pings are answered and skipped."""
        while True:
            raw = await asyncio.wait_for(self.conn.recv(), timeout)
            frame = orjson.loads(raw)
            if frame.get("type") == "ping":
                await self.send({"action": "pong"})
                continue
            return frame

    async def expect(self, kind: str, timeout: float = FRAME_TIMEOUT) -> dict:
        """The next frame of type `kind`; only background frames may come first."""
        while True:
            frame = await self.recv(timeout)
            if frame.get("type") == kind:
                return frame
            assert frame.get("type") in BACKGROUND_FRAMES, f"expected {kind!r}, got {frame}"

    async def messages(self, count: int, timeout: float = FRAME_TIMEOUT) -> list[dict]:
        """The next `count` message frames (each within `timeout`)."""
        return [await self.expect("message", timeout) for _ in range(count)]

    async def closed(self, timeout: float = FRAME_TIMEOUT) -> tuple[int | None, list[dict]]:
        """Read until the server closes: the close code and the frames before it."""
        frames = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frames.append(orjson.loads(await self.conn.recv()))
        except ConnectionClosed as exc:
            return (exc.rcvd.code if exc.rcvd else None), frames

    async def ping(self, request_id: str = "alive") -> dict:
        """Prove the socket is up: a ping must be answered with a pong."""
        await self.send({"action": "ping", "request_id": request_id})
        pong = await self.expect("pong")
        assert pong.get("request_id") == request_id
        return pong


@contextlib.asynccontextmanager
async def ws_client(url: str, *, welcome: bool = True, **connect_kwargs):
    """Connect, read the welcome frame (unless `welcome=False`), close on exit."""
    connect_kwargs.setdefault("open_timeout", FRAME_TIMEOUT)
    connect_kwargs.setdefault("close_timeout", 5)
    connect_kwargs.setdefault("proxy", None)
    async with websockets.connect(url, **connect_kwargs) as conn:
        client = WSClient(conn)
        if welcome:
            client.welcome = await client.expect("welcome")
        yield client


async def push(http: httpx.AsyncClient, path: str = "/api/v1/push", **body) -> dict:
    """POST one push; it must be accepted. Returns the receipt."""
    response = await http.post(path, json=body)
    assert response.status_code == 202, response.text
    return response.json()


async def wait_connections(gateway: Gateway, count: int, timeout: float = 15.0) -> None:
    """Wait until /health of `gateway` reports `count` local connections."""
    seen = None
    async with httpx.AsyncClient(base_url=gateway.http, timeout=5) as http:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = (await http.get("/health")).json()["connections"]
            if seen == count:
                return
            await asyncio.sleep(0.1)
    raise AssertionError(f"{gateway.http} has {seen} connections, expected {count}")
