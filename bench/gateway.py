"""Gateway processes under test, and what the kernel says about processes.

A gateway is started the way `make run` starts it (`bin/serve`), with a
throw-away SQLite database and static root, pinned to the server core; the
approach of `tests/servers.py`, plus CPU pinning and process statistics.
"""

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid: int) -> int:
    """Resident set size of a process, KiB (VmRSS in /proc/<pid>/status)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of stat (utime, stime); [0] here is field 3.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> dict[str, tuple[int, int]]:
    """Per CPU (busy, total) jiffies since boot, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                name, *values = line.split()
                v = list(map(int, values))
                idle = v[3] + v[4]  # idle + iowait
                total = sum(v[:8])  # guest time is already counted in user
                out[name] = (total - idle, total)
    return out


def busy_share(before: dict, after: dict) -> dict[str, float]:
    """Per CPU share of time busy between two `machine_busy()` readings."""
    return {
        cpu: (after[cpu][0] - before[cpu][0]) / max(1, after[cpu][1] - before[cpu][1])
        for cpu in after
        if cpu in before
    }


@dataclass
class Gateway:
    """One running gateway process (the Python process `bin/serve` execs)."""

    port: int
    proc: subprocess.Popen
    log_path: Path
    env: dict = field(repr=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict:
        import orjson

        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as r:
            return orjson.loads(r.read())

    def stop(self, timeout: float = 10) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_gateway(
    work_dir: Path, *, server: str, cpus: set[int] | None, env_overrides: dict
) -> Gateway:
    """Start `bin/serve` on a free port and wait until /health answers."""
    port = free_port()
    work_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DEBUG": "true",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PYTHON": sys.executable,
        "ASGI_SERVER": server,
        "DATABASE_URL": f"sqlite:///{work_dir / 'db.sqlite3'}",
        "STATIC_ROOT": str(work_dir / "static"),
        "REDIS_URL": "",
        "LOG_LEVEL": "WARNING",
        # One generator address and a few connections carry all the load:
        # the per-client limits would measure themselves, not the gateway.
        "API_RATE_LIMIT": "1000000",
        "API_RATE_BURST": "1000000",
        "WEBSOCKET_RATE_LIMIT": "1000000",
        "WEBSOCKET_RATE_BURST": "1000000",
        "WEBSOCKET_MAX_CONNECTIONS": "50000",
        "SSE_MAX_CONNECTIONS": "50000",
        **env_overrides,
    }

    def pin():
        if cpus:
            os.sched_setaffinity(0, cpus)

    log_path = work_dir / f"gateway-{port}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(ROOT / "bin" / "serve")],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin,  # the generator has no threads yet: fork-safe
        )
    gateway = Gateway(port, proc, log_path, env)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}:\n{gateway.log()}")
        with contextlib.suppress(OSError):
            if gateway.health().get("status") == "healthy":
                return gateway
        time.sleep(0.2)
    gateway.stop()
    raise RuntimeError(f"gateway did not answer /health in time:\n{gateway.log()}")


def redis_prefix() -> str:
    return f"bench{uuid.uuid4().hex[:10]}"


def check_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        raise SystemExit(f"Redis is required at {url} for --backend redis: {exc}") from exc
    finally:
        client.close()


def redis_clients(url: str) -> int | None:
    """How many client connections the Redis server holds (all users of it)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        return int(client.info("clients")["connected_clients"])
    except redis.RedisError:
        return None
    finally:
        client.close()


def redis_pid(url: str) -> int | None:
    """The Redis server's pid when it runs on this machine (for its CPU time)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        pid = int(client.info("server")["process_id"])
    finally:
        client.close()
    return pid if os.path.exists(f"/proc/{pid}/stat") else None


def clear_redis_prefix(url: str, prefix: str) -> int:
    """Delete every key under `prefix:`; returns how many there were."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        for i in range(0, len(keys), 1000):
            client.delete(*keys[i : i + 1000])
        return len(keys)
    finally:
        client.close()


EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\b")


def log_problems(text: str) -> list[str]:
    """Lines of a gateway log that report trouble: warnings, errors, and the
    last line of each traceback (the exception itself)."""
    words = ("ERROR", "CRITICAL", "WARNING")
    return [
        line
        for line in text.splitlines()
        if any(w in line for w in words) or EXCEPTION_LINE.match(line)
    ]


def problem_kinds(lines: list[str], top: int = 6) -> list[tuple[str, int]]:
    """The most frequent kinds of problem lines, numbers and object details blurred."""
    kinds = Counter()
    for line in lines:
        text = re.sub(r"^\[\d+\] ", "", line)
        text = re.sub(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", "", text)
        text = re.sub(r"<[^<>]*(<[^<>]*(<[^<>]*>[^<>]*)*>[^<>]*)*>", "<...>", text)
        text = re.sub(r"\d+", "#", text)
        kinds[text[:200]] += 1
    return kinds.most_common(top)
