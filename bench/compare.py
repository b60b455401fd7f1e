"""The gateway against reference servers: `python -m bench.compare`
(what `make bench` runs; `make bench-smoke` is `--smoke`).

One load generator (this process, uvloop, pinned to core 0) runs the same
workloads, with the same rates, against every target, each pinned to core 1:

- `gateway-uvicorn`, `gateway-daphne`: the gateway (`bin/serve`, `DEBUG=true`)
  on the embedded default (one process) and on Redis (two processes);
- `socketio`: python-socketio on uvicorn (`bench/peers/socketio_server.py`);
- `websockets`: a bare `websockets` server speaking the gateway's wire
  format (`bench/peers/websockets_server.py`; it has no HTTP API);
- `uvicorn-floor`: an ASGI app that only holds WebSockets, on uvicorn with
  the gateway's flags (`bench/peers/uvicorn_floor.py`): W3 only, the least an
  idle WebSocket can cost the gateway on uvicorn.

Workloads:

- W1 fan-out: 1,000 then 5,000 subscribers of one channel; one more
  connection publishes at rising rates; sustained = p99 < 250 ms, no loss.
- W2 unicast: HTTP pushes to random single users (1,000 connected) at rising
  rates, sustained = p99 < 50 ms, no loss; and batches of 100 (p99 < 250 ms).
- W3 idle: memory per idle WebSocket at 5,000 and connections accepted per
  second; for the gateway also memory per idle SSE stream (bench/sse_scenarios.py).
- W4 send with reply through an echo bot, over WebSocket and over HTTP;
  round trips/s with p99 < 50 ms and nothing lost.

Open loop: a step at rate R schedules send i at t0 + i/R whatever the target
does; payloads carry that time (`t`), latency is measured from it. Prints one
table (each figure, the gateway's ratio to each peer, the targets),
writes the run to bench/results/, and (unless `--smoke` or `--no-docs`)
docs/bench/peers.json, docs/bench/peers.png and its section of
docs/benchmarks.md.
"""

import abc
import argparse
import asyncio
import contextlib
import datetime
import gc
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import compare_report as report
from . import gateway as gw
from .httpclient import RawPool
from .peerclients import FastWSClient, SioClient
from .run import run_header
from .scenarios import Plan as ScenarioPlan
from .scenarios import Session
from .scenarios import describe as describe_step
from .sseclient import SSEPool
from .stats import StepResult, ms, percentile
from .wsclient import Sink, WSClient, connect, connect_many

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
TARGETS = ("gateway-uvicorn", "gateway-daphne", "socketio", "websockets", "uvicorn-floor")
WORKLOADS = ("w1", "w2", "w3", "w4")
CHANNEL = "bench"
BOT = "ci_bot"
GENERATOR_BOUND = 0.9  # share of its core above which a step is generator-bound

# The gateway's per-connection and per-client limits, raised for the bench.
GATEWAY_ENV = {
    "WEBSOCKET_RATE_LIMIT": "100000",
    "WEBSOCKET_RATE_BURST": "100000",
    "MAX_CONNECTIONS_PER_USER": "20000",
    "WEBSOCKET_MAX_CONNECTIONS": "20000",
    "SSE_MAX_CONNECTIONS": "20000",
    "API_RATE_LIMIT": "1000000",
    "API_RATE_BURST": "1000000",
}


@dataclass
class Plan:
    """Sizes, rates and bounds: the same for every target."""

    clients: int = 1000  # load clients: W1's first size, W2, W4
    max_clients: int = 5000  # W1's second size (top-up) and W3's idle connections
    step_seconds: float = 5.0
    spread_s: float = 20.0  # connect the load clients evenly over this long
    fanout_rates: list = field(  # broadcasts/s
        default_factory=lambda: [1, 2, 5, 10, 20, 35, 50, 75, 100, 150, 200, 300, 500]
    )
    unicast_rates: list = field(  # pushes/s
        default_factory=lambda: [50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000, 6000]
    )
    batch_size: int = 100
    batch_rates: list = field(  # batch requests/s, x batch_size deliveries/s
        default_factory=lambda: [1, 2, 5, 10, 20, 35, 50, 75, 100, 150]
    )
    reply_rates: list = field(  # round trips/s
        default_factory=lambda: [50, 100, 200, 400, 700, 1000, 1500, 2000, 3000, 4000, 6000]
    )
    fanout_limit_ms: float = 250.0
    unicast_limit_ms: float = 50.0
    batch_limit_ms: float = 250.0  # a bulk call, held to the fan-out bound (as bench.run does)
    reply_limit_ms: float = 50.0
    reply_timeout_s: float = 10.0
    reply_senders: int = 100  # W4 over WebSocket: round trips spread over this many clients
    pool_size: int = 32  # keep-alive HTTP connections per process
    reply_pool_size: int = 64  # W4 over HTTP: connections per process
    connect_concurrency: int = 100  # handshakes in flight
    stop_after_failures: int = 2
    abort_lag_s: float = 1.0  # a step more than this behind schedule is cut short
    drain_s: float = 2.0  # wait this long without progress for the last deliveries
    drain_max_s: float = 10.0  # and never longer than this after the last send
    quiet_wait_s: float = 2.0  # before a step, wait up to this for other processes
    quiet_cpu: float = 0.25
    noisy_cpu: float = 0.3  # a failing step during which others used more is run again
    max_noisy_retries: int = 1  # per ladder
    fresh_processes: bool = True  # restart the target between W3 and the load
    # Before a step, wait (up to idle_max_s) until the server's processes use
    # less than idle_cpu of a core over idle_window_s: an earlier step's backlog
    # must not spoil the next one.
    idle_window_s: float = 0.25
    idle_max_s: float = 15.0
    idle_cpu: float = 0.15
    stale_quiet_s: float = 0.3  # ... and until no frame came for this long
    sse_hold_s: float = 1.0  # W3: hold the idle SSE streams this long
    settle_pause_s: float = 1.0
    smoke: bool = False

    @property
    def fanout_sizes(self) -> list[int]:
        return sorted({self.clients, max(self.clients, self.max_clients)})

    @classmethod
    def for_smoke(cls) -> "Plan":
        return cls(
            clients=50,
            max_clients=100,
            step_seconds=0.5,
            spread_s=0.0,
            fanout_rates=[10, 40],
            unicast_rates=[100],
            batch_rates=[4],
            reply_rates=[100],
            reply_senders=10,
            pool_size=8,
            reply_pool_size=8,
            drain_s=0.5,
            drain_max_s=3.0,
            quiet_wait_s=0.0,
            noisy_cpu=float("inf"),
            idle_window_s=0.1,
            idle_max_s=1.0,
            stale_quiet_s=0.05,
            sse_hold_s=0.2,
            fresh_processes=False,
            settle_pause_s=0.1,
            smoke=True,
        )


# --- small helpers -------------------------------------------------------------------


def pin(pid: int, cpus: set[int] | None) -> None:
    """Pin every thread of a process (threads it starts later inherit it)."""
    if not cpus:
        return
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        return
    for tid in tasks:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.sched_setaffinity(int(tid), cpus)


async def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET on its own connection (no threads: the generator stays single-threaded)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode()
        )
        data = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"\r\ntransfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return int(head[9:12]), body


def dechunk(body: bytes) -> bytes:
    out, pos = [], 0
    while True:
        end = body.find(b"\r\n", pos)
        if end < 0:
            break
        size = int(body[pos:end].split(b";")[0], 16)
        if size == 0:
            break
        out.append(body[end + 2 : end + 2 + size])
        pos = end + 2 + size + 2
    return b"".join(out)


GC_LINE = re.compile(r"^gateway_gc_pause_seconds_(bucket|count)\{([^}]*)\} (\S+)$", re.M)


def parse_gc(text: str) -> dict | None:
    """`gateway_gc_pause_seconds` from Prometheus text: cumulative count per
    bucket bound (summed over generations) and the total; None when absent."""
    buckets: dict[float, float] = {}
    count = 0.0
    found = False
    for kind, labels, value in GC_LINE.findall(text):
        found = True
        if kind == "count":
            count += float(value)
            continue
        le = dict(re.findall(r'(\w+)="([^"]*)"', labels)).get("le")
        if le is not None:
            bound = float("inf") if le == "+Inf" else float(le)
            buckets[bound] = buckets.get(bound, 0.0) + float(value)
    return {"buckets": buckets, "count": count} if found else None


def gc_delta(before: dict | None, after: dict | None) -> dict | None:
    """Pauses between two readings: how many took over 50 ms, and the smallest
    bucket bound that holds them all (the longest pause is at most that)."""
    if before is None or after is None:
        return None
    count = after["count"] - before["count"]
    buckets = {b: after["buckets"][b] - before["buckets"].get(b, 0.0) for b in after["buckets"]}
    under_50 = buckets.get(0.05)
    longest = None
    for bound in sorted(buckets):
        if buckets[bound] >= count:
            longest = bound
            break
    return {
        "pauses": int(count),
        "over_50ms": int(count - under_50) if under_50 is not None else None,
        "longest_le_s": longest if count else 0.0,
    }


class Probe:
    """CPU used by the generator, the target's processes, Redis and everything
    else, over a span of wall time."""

    # The cores of the generator and of the servers (set by `main` when pinned).
    generator_cores: set[int] = set()
    server_cores: set[int] = set()

    def __init__(self, pids: list[int], redis_pid: int | None = None):
        self.pids = pids
        self.redis_pid = redis_pid

    def __enter__(self) -> "Probe":
        self.t0 = time.monotonic()
        self.cpu0 = time.process_time()
        self.busy0 = gw.machine_busy()
        self.srv0 = [gw.cpu_seconds(p) for p in self.pids]
        self.redis0 = gw.cpu_seconds(self.redis_pid) if self.redis_pid else None
        return self

    def __exit__(self, *exc) -> None:
        self.wall = max(1e-6, time.monotonic() - self.t0)
        self.generator_cpu = round((time.process_time() - self.cpu0) / self.wall, 3)
        self.server_cpu = [
            round((gw.cpu_seconds(p) - c) / self.wall, 3)
            for p, c in zip(self.pids, self.srv0, strict=True)
        ]
        self.redis_cpu = (
            round((gw.cpu_seconds(self.redis_pid) - self.redis0) / self.wall, 3)
            if self.redis0 is not None
            else None
        )
        busy = gw.busy_share(self.busy0, gw.machine_busy())
        self.cpu_busy = {k: round(v, 3) for k, v in busy.items()}
        ours = self.generator_cpu + sum(self.server_cpu) + (self.redis_cpu or 0.0)
        self.other_cpu = round(max(0.0, sum(busy.values()) - ours), 2)
        # What others took of each pinned core (Redis, unpinned, counts as other).
        self.other_on_server_core = self._other_on(self.server_cores, sum(self.server_cpu), busy)
        self.other_on_generator_core = self._other_on(
            self.generator_cores, self.generator_cpu, busy
        )

    @staticmethod
    def _other_on(cores: set[int], ours: float, busy: dict) -> float | None:
        if not cores:
            return None
        used = sum(busy.get(f"cpu{c}", 0.0) for c in cores)
        return round(max(0.0, used - ours), 2)

    def fill(self, result: StepResult) -> dict:
        result.generator_cpu = self.generator_cpu
        result.server_cpu = self.server_cpu
        result.redis_cpu = self.redis_cpu
        result.cpu_busy = self.cpu_busy
        result.other_cpu = self.other_cpu
        return {
            "other_on_server_core": self.other_on_server_core,
            "other_on_generator_core": self.other_on_generator_core,
        }


def percentiles(lat: array) -> dict:
    if not lat:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    import numpy as np

    values = np.frombuffer(lat, dtype=np.float64)
    p50, p90, p99 = np.percentile(values, [50, 90, 99], method="inverted_cdf")
    return {
        "p50_ms": ms(float(p50)),
        "p90_ms": ms(float(p90)),
        "p99_ms": ms(float(p99)),
        "max_ms": ms(float(values.max())),
    }


# --- what the clients hear -------------------------------------------------------------


class Recorder(Sink):
    """Counts and times the messages of the current step as clients hear them.

    Every payload carries `{"k": step, "s": seq, "t": scheduled}`. In a fan-out
    step every subscriber gets the same bytes for one broadcast, so what a
    payload decodes to is cached by its bytes: one parse per broadcast."""

    def __init__(self, decode: Callable[[bytes], object]):
        self.decode = decode
        self.closed: list[WSClient] = []
        self.reset(-1, 0)
        self.last_any = time.monotonic()

    def reset(self, step: int, size: int, targets: list[int] | None = None, cache=False) -> None:
        self.step = step
        self.counts = [0] * size
        self.targets = targets
        self.lat = array("d")
        self.received = 0
        self.stale = 0
        self.misrouted = 0
        self.cache: dict | None = {} if cache else None
        self.last_heard = time.monotonic()

    def on_message(self, client: WSClient, payload: bytes, now: float) -> None:
        self.last_any = now
        cache = self.cache
        entry = cache.get(payload, False) if cache is not None else False
        if entry is False:
            try:
                data = self.decode(payload)
            except (ValueError, KeyError, IndexError, TypeError):
                data = None
            if isinstance(data, dict) and data.get("k") == self.step:
                entry = (data["s"], data["t"])
            else:
                entry = None
            if cache is not None:
                cache[payload] = entry
        if entry is None:
            self.stale += 1
            return
        seq, t = entry
        self.counts[seq] += 1
        self.lat.append(now - t)
        self.received += 1
        self.last_heard = now
        client.heard += 1
        if self.targets is not None and self.targets[seq] != client.index:
            self.misrouted += 1

    def on_closed(self, client: WSClient) -> None:
        self.closed.append(client)


class GatewayEchoBot(Sink):
    """`ci_bot` on the gateway's wire format: every message with a correlation
    id is answered at once with a final `response` echoing its data."""

    def __init__(self) -> None:
        self.answered = 0

    def on_message(self, client: WSClient, payload: bytes, now: float) -> None:
        frame = orjson.loads(payload)
        correlation_id = frame.get("correlation_id")
        if correlation_id is None:
            return
        client.send_json(
            {
                "action": "response",
                "correlation_id": correlation_id,
                "data": frame.get("data"),
                "is_final": True,
            }
        )
        self.answered += 1


# --- dialects ----------------------------------------------------------------------------


class GatewayDialect:
    """The gateway's frames (which the `websockets` reference speaks too)."""

    client_class = FastWSClient

    def __init__(self) -> None:
        self.reply_callbacks: dict[str, Callable] = {}

    @staticmethod
    def decode(payload: bytes):
        return orjson.loads(payload)["data"]

    def subscribe(self, client, channel: str) -> asyncio.Future:
        fut = client.expect("subscribed")
        client.send_json({"action": "subscribe", "channel": channel})
        return fut

    def publish(self, client, channel: str, data) -> None:
        client.send_json({"action": "publish", "channel": channel, "data": data})

    def prepare_sender(self, client) -> None:
        client.frame_hook = self._on_frame

    def _on_frame(self, client, frame: dict, now: float) -> None:
        if frame.get("type") == "response":
            callback = self.reply_callbacks.pop(frame.get("correlation_id"), None)
            if callback is not None:
                callback(now, frame.get("data"))

    def ws_send(self, client, correlation_id: str, data, callback: Callable) -> None:
        self.reply_callbacks[correlation_id] = callback
        client.send_json(
            {"action": "send", "to": f"@{BOT}", "data": data, "correlation_id": correlation_id}
        )

    def forget_replies(self) -> None:
        self.reply_callbacks.clear()

    async def connect_bot(self, port: int):
        sink = GatewayEchoBot()
        bot = await connect(-1, BOT, HOST, port, sink, self.client_class)
        bot.bot_sink = sink
        return bot


class SocketIODialect:
    """Socket.IO events over the raw client (bench.engineio)."""

    client_class = SioClient

    @staticmethod
    def decode(payload: bytes):
        return orjson.loads(payload[2:])[1]

    def subscribe(self, client, channel: str) -> asyncio.Future:
        fut = asyncio.get_running_loop().create_future()

        def acked(args, now):
            if not fut.done():
                fut.set_result(args)

        client.emit("subscribe", channel, ack=acked)
        return fut

    def publish(self, client, channel: str, data) -> None:
        client.emit("publish", {"channel": channel, "data": data})

    def prepare_sender(self, client) -> None:
        return None

    def ws_send(self, client, correlation_id: str, data, callback: Callable) -> None:
        def acked(args, now):
            reply = args[0] if args else None
            if isinstance(reply, dict) and "error" not in reply:
                callback(now, reply)

        client.emit("send", {"to": BOT, "data": data, "timeout": 10}, ack=acked)

    def forget_replies(self) -> None:
        return None

    async def connect_bot(self, port: int):
        bot = await connect(-1, BOT, HOST, port, Sink(), self.client_class)
        bot.bot_sink = bot
        bot.answered = 0

        def on_event(client, packet, now):
            if packet.event == "request" and packet.ack_id is not None:
                client.answer(packet.ack_id, *packet.args)
                client.answered += 1

        bot.on_event = on_event
        return bot


# --- targets ---------------------------------------------------------------------------


class Target(abc.ABC):
    """One server under test: how to start it, count its connections, and talk to it."""

    kind = ""
    has_http = False
    has_channels = True  # answers subscribe and publish
    http_send_events = False  # the send-with-reply answer is an event stream
    # The workloads it serves; the run records the others as skipped, for this reason.
    workloads = WORKLOADS
    not_served = ""

    def __init__(self, name: str, backend: str, harness: "Harness"):
        self.name = name
        self.backend = backend
        self.harness = harness
        self.work = Path(tempfile.mkdtemp(prefix=f"peers-{name}-"))
        self.ports: list[int] = []
        self.pids: list[int] = []
        self.redis_pid: int | None = None
        self.log_problems: list[str] = []
        self.starts = 0

    @property
    def label(self) -> str:
        return f"{self.name}/{self.backend}" if self.kind == "gateway" else self.name

    def port_for(self, i: int) -> int:
        return self.ports[i % len(self.ports)]

    def rss(self) -> int:
        return sum(gw.rss_kib(p) for p in self.pids)

    def alive(self) -> bool:
        return all(os.path.exists(f"/proc/{p}") for p in self.pids)

    async def connections(self) -> int:
        total = 0
        for port in self.ports:
            _, body = await http_get(port, "/health")
            health = orjson.loads(body)
            total += health.get("websocket", health.get("connections", 0))
        return total

    async def gc_reading(self) -> dict | None:
        return None

    @abc.abstractmethod
    def start(self) -> None:
        """Start the server(s), pinned, and wait until they answer."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop the server(s) and keep their logs."""

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)


class GatewayTarget(Target, GatewayDialect):
    kind = "gateway"
    has_http = True
    http_send_events = True
    push_path, batch_path, send_path = "/api/v1/push", "/api/v1/push/batch", "/api/v1/send"

    def __init__(self, name: str, backend: str, harness: "Harness"):
        Target.__init__(self, name, backend, harness)
        GatewayDialect.__init__(self)
        self.server = name.removeprefix("gateway-")
        self.gateways: list[gw.Gateway] = []
        self.redis_prefix: str | None = None

    def start(self) -> None:
        self.starts += 1
        env = dict(GATEWAY_ENV)
        count = 1
        if self.backend == "redis":
            url = self.harness.redis_url
            try:
                gw.check_redis(url)
            except SystemExit as exc:  # its way of saying Redis is not there
                raise RuntimeError(str(exc)) from None
            self.redis_pid = gw.redis_pid(url)
            self.redis_prefix = gw.redis_prefix()
            env.update(REDIS_URL=url, REDIS_PREFIX=self.redis_prefix)
            count = 2
        work = self.work / f"start{self.starts}"
        env["DATABASE_URL"] = f"sqlite:///{work / 'db.sqlite3'}"
        for n in range(count):
            # Pinned once up, every thread of it (see `pin`).
            g = gw.start_gateway(work / f"p{n}", server=self.server, cpus=None, env_overrides=env)
            pin(g.pid, self.harness.server_cpus)
            self.gateways.append(g)
        self.ports = [g.port for g in self.gateways]
        self.pids = [g.pid for g in self.gateways]

    def stop(self) -> None:
        for g in self.gateways:
            g.stop()
            self.log_problems += [f"[{g.port}] {line}" for line in gw.log_problems(g.log())]
            self.harness.keep_log(self, g.log_path)
        self.gateways = []
        if self.redis_prefix:
            gw.clear_redis_prefix(self.harness.redis_url, self.redis_prefix)
            self.redis_prefix = None

    async def gc_reading(self) -> dict | None:
        total = None
        for port in self.ports:
            try:
                _, body = await http_get(port, "/metrics")
            except (OSError, TimeoutError):
                return None
            one = parse_gc(body.decode(errors="replace"))
            if one is None:
                return None
            if total is None:
                total = one
            else:
                for bound, value in one["buckets"].items():
                    total["buckets"][bound] = total["buckets"].get(bound, 0.0) + value
                total["count"] += one["count"]
        return total

    def push_body(self, user: str, data) -> bytes:
        return orjson.dumps({"user_id": user, "data": data})

    def batch_body(self, items: list) -> bytes:
        return orjson.dumps([{"user_id": u, "data": d} for u, d in items])

    def send_body(self, correlation_id: str, data, timeout: float) -> bytes:
        return orjson.dumps(
            {"user_id": BOT, "data": data, "correlation_id": correlation_id, "timeout": timeout}
        )


class PeerTarget(Target):
    """A reference server in bench/peers, one process."""

    kind = "peer"
    module = ""

    def start(self) -> None:
        self.starts += 1
        port = gw.free_port()
        self.log_path = self.work / f"{self.name}-{port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", f"bench.peers.{self.module}", "--port", str(port)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.log_path.read_text()}"
                )
            try:
                with urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2) as r:
                    if orjson.loads(r.read()).get("status") == "healthy":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise RuntimeError(f"{self.name} did not answer /health in time")
            time.sleep(0.1)
        pin(self.proc.pid, self.harness.server_cpus)
        self.ports = [port]
        self.pids = [self.proc.pid]

    def stop(self) -> None:
        proc, self.proc = getattr(self, "proc", None), None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.log_problems += gw.log_problems(self.log_path.read_text(errors="replace"))
        self.harness.keep_log(self, self.log_path)


class WebsocketsTarget(PeerTarget, GatewayDialect):
    module = "websockets_server"

    def __init__(self, name: str, backend: str, harness: "Harness"):
        PeerTarget.__init__(self, name, backend, harness)
        GatewayDialect.__init__(self)


class UvicornFloorTarget(PeerTarget, GatewayDialect):
    """uvicorn with an empty app: it answers nothing, so only W3 applies (the
    client waits for the gateway's `welcome` frame, which the app sends)."""

    module = "uvicorn_floor"
    has_channels = False
    workloads = ("w3",)
    not_served = "an empty app, it only holds idle WebSockets (W3)"

    def __init__(self, name: str, backend: str, harness: "Harness"):
        PeerTarget.__init__(self, name, backend, harness)
        GatewayDialect.__init__(self)


class SocketIOTarget(PeerTarget, SocketIODialect):
    module = "socketio_server"
    has_http = True
    push_path, batch_path, send_path = "/push", "/push/batch", "/send"

    def push_body(self, user: str, data) -> bytes:
        return orjson.dumps({"user_id": user, "data": data})

    def batch_body(self, items: list) -> bytes:
        return orjson.dumps([{"user_id": u, "data": d} for u, d in items])

    def send_body(self, correlation_id: str, data, timeout: float) -> bytes:
        return orjson.dumps({"user_id": BOT, "data": data, "timeout": timeout})


def make_target(name: str, backend: str, harness: "Harness") -> Target:
    if name.startswith("gateway-"):
        return GatewayTarget(name, backend, harness)
    if name == "socketio":
        return SocketIOTarget(name, "-", harness)
    if name == "websockets":
        return WebsocketsTarget(name, "-", harness)
    if name == "uvicorn-floor":
        return UvicornFloorTarget(name, "-", harness)
    raise ValueError(name)


# --- the harness ---------------------------------------------------------------------------


class Harness:
    def __init__(self, plan: Plan, *, workloads: list[str], redis_url: str, server_cpus, log=print):
        self.plan = plan
        self.workloads = workloads
        self.redis_url = redis_url
        self.server_cpus = server_cpus
        self.log = log
        self.logs_dir: Path | None = None
        self.step_id = 0
        self.rng = random.Random(7)
        self.tag = f"{random.getrandbits(32):08x}"

    def keep_log(self, target: Target, path: Path) -> None:
        if self.logs_dir is None or not path.exists():
            return
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        name = target.label.replace("/", "-")
        shutil.copyfile(path, self.logs_dir / f"{name}-{target.starts}-{path.name}")

    # -- per target -----------------------------------------------------------------------
    async def run_target(self, target: Target) -> dict:
        plan = self.plan
        out: dict = {
            "label": target.label,
            "name": target.name,
            "kind": target.kind,
            "backend": target.backend,
            "workloads": {},
            "errors": [],
        }
        self.target = target
        self.errors = out["errors"]
        self.clients: list = []
        self.recorder = Recorder(target.decode)
        self.bot = None
        self.publisher = None
        started = time.monotonic()
        served = [w for w in self.workloads if w in target.workloads]
        for w in self.workloads:
            if w not in served:
                self.log(f"  {w.upper()} skipped: {target.not_served}")
                out["workloads"][w] = {"skipped": target.not_served}
        try:
            if "w3" in served:
                target.start()
                self.log(f"  started on ports {target.ports}")
                out["workloads"]["w3"] = w3 = {"ws": await self.idle_websockets()}
                if target.kind == "gateway":
                    if plan.fresh_processes:
                        target.stop()
                        target.start()
                    w3["sse"] = await self.idle_sse()
                if plan.fresh_processes and set(served) - {"w3"}:
                    target.stop()
            load = [w for w in served if w != "w3"]
            if load:
                if not target.ports or not target.alive() or plan.fresh_processes:
                    target.start()
                    self.log(f"  started on ports {target.ports}")
                await self.load_phase(target, load, out)
        except Exception as exc:
            traceback.print_exc()
            out["errors"].append(f"{type(exc).__name__}: {exc}"[:500])
        finally:
            try:
                await self.close_clients()
            finally:
                try:
                    target.stop()
                except Exception as exc:
                    out["errors"].append(f"stop: {type(exc).__name__}: {exc}"[:300])
                target.cleanup()
        out["log_problems"] = len(target.log_problems)
        out["log_problem_kinds"] = gw.problem_kinds(target.log_problems)
        out["log_problem_sample"] = target.log_problems[:10]
        out["seconds"] = round(time.monotonic() - started, 1)
        return out

    async def load_phase(self, target: Target, load: list[str], out: dict) -> None:
        plan = self.plan
        t0 = time.monotonic()
        self.clients, took = await connect_many(
            self.specs(0, plan.clients),
            self.recorder,
            concurrency=plan.connect_concurrency,
            spread_s=plan.spread_s,
            client_class=target.client_class,
        )
        await self.settle(plan.clients)
        out["load_clients_connect_s"] = round(time.monotonic() - t0, 1)
        self.log(f"  {plan.clients} load clients connected in {took:.1f} s")
        self.publisher = await connect(
            -2, "bench-publisher", HOST, target.port_for(0), Sink(), target.client_class
        )
        if "w1" in load:
            sizes = {}
            out["workloads"]["w1"] = {"sizes": sizes}
            await self.subscribe(self.clients)
            sizes[str(plan.clients)] = await self.workload(self.fanout, len(self.clients))
        if "w2" in load:
            out["workloads"]["w2"] = await self.workload(self.unicast_and_batch)
        if "w4" in load:
            out["workloads"]["w4"] = await self.workload(self.replies)
        if "w1" in load and plan.max_clients > plan.clients:
            await self.repair_clients()
            more, took = await connect_many(
                self.specs(len(self.clients), plan.max_clients),
                self.recorder,
                concurrency=plan.connect_concurrency,
                spread_s=plan.spread_s,
                client_class=target.client_class,
            )
            self.clients += more
            await self.settle(len(self.clients))
            self.log(f"  topped up to {len(self.clients)} clients (+{len(more)} in {took:.1f} s)")
            await self.subscribe(more)
            sizes[str(plan.max_clients)] = await self.workload(self.fanout, len(self.clients))
        down = sum(1 for c in self.clients if c.closed.done())
        out["clients_down_at_end"] = down

    async def workload(self, body, *args) -> dict:
        """Run one workload between two readings of the gateway's GC metric.

        An exception ends this workload only: it is recorded as the target's
        error (the run then exits non-zero) and the next workload runs."""
        try:
            await self.repair_clients()
            before = await self.target.gc_reading()
            result = await body(*args)
            result["gc"] = gc_delta(before, await self.target.gc_reading())
        except Exception as exc:
            traceback.print_exc()
            error = f"{body.__name__}: {type(exc).__name__}: {exc}"[:500]
            self.errors.append(error)
            return {"error": error}
        if result["gc"]:
            self.log(f"  GC: {result['gc']}")
        return result

    def specs(self, first: int, last: int, name: str = "bench") -> list[tuple]:
        return [(i, f"{name}-{i}", HOST, self.target.port_for(i)) for i in range(first, last)]

    def others(self) -> int:
        """Connections open besides the load clients (the publisher, the bot)."""
        return sum(1 for c in (self.publisher, self.bot) if c is not None and not c.closed.done())

    async def settle(self, count: int, timeout: float = 60.0) -> dict:
        """Wait until the target counts `count` WebSockets, then a little more."""
        count += self.others()
        started = time.monotonic()
        seen = None
        while time.monotonic() - started < timeout:
            try:
                seen = await self.target.connections()
            except (OSError, TimeoutError, ValueError):
                seen = None
            if seen == count:
                break
            await asyncio.sleep(0.2)
        else:
            self.log(f"  ! after {timeout:.0f} s the target counts {seen} connections, not {count}")
        took = time.monotonic() - started
        await asyncio.sleep(self.plan.settle_pause_s)
        return {"settle_s": round(took, 2), "counted": seen}

    async def subscribe(self, clients: list) -> None:
        t0 = time.monotonic()
        futures = [self.target.subscribe(c, CHANNEL) for c in clients]
        await asyncio.wait_for(asyncio.gather(*futures), 120)
        self.log(f"  {len(clients)} clients subscribed in {time.monotonic() - t0:.2f} s")

    async def repair_clients(self) -> None:
        """Reconnect (and resubscribe) load clients the target closed, so one
        workload's overload does not spoil the next."""
        down = [i for i, c in enumerate(self.clients) if c.closed.done()]
        if not down:
            return
        self.log(f"  ! {len(down)} clients were closed; reconnecting them")
        fresh, _ = await connect_many(
            [(i, f"bench-{i}", HOST, self.target.port_for(i)) for i in down],
            self.recorder,
            concurrency=self.plan.connect_concurrency,
            client_class=self.target.client_class,
        )
        for i, client in zip(down, fresh, strict=True):
            self.clients[i] = client
        if "w1" in self.workloads:
            await self.subscribe(fresh)
        if self.publisher is not None and self.publisher.closed.done():
            self.publisher = await connect(
                -2,
                "bench-publisher",
                HOST,
                self.target.port_for(0),
                Sink(),
                self.target.client_class,
            )

    async def close_clients(self) -> None:
        for c in self.clients:
            c.close()
        for c in (self.publisher, self.bot):
            if c is not None:
                c.close()
        self.clients, self.publisher, self.bot = [], None, None
        await asyncio.sleep(0.2)

    # -- W3: idle connections --------------------------------------------------------------
    async def warm_up(self) -> None:
        """Touch every code path once, so that lazy imports are not counted as memory."""
        target = self.target
        n = 10 * len(target.ports)
        clients, _ = await connect_many(
            self.specs(0, n, "warm"), Sink(), client_class=target.client_class
        )
        if target.has_channels:
            await asyncio.gather(*(target.subscribe(c, "warm") for c in clients[:2]))
            target.publish(clients[-1], "warm", {"w": 1})
        if target.has_http:
            pool = RawPool(HOST, target.port_for(0), 2, lambda *a: None)
            await pool.start()
            pool.submit(target.push_path, target.push_body("warm-0", {"w": 2}), None, 0)
            pool.submit(target.batch_path, target.batch_body([("warm-1", {"w": 3})]), None, 0)
            await asyncio.sleep(0.3)
            await pool.close()
        await asyncio.sleep(0.3)
        for c in clients:
            c.close()
        await self.settle(0)

    async def idle_websockets(self) -> dict:
        plan = self.plan
        target = self.target
        n = plan.max_clients
        rss_start = target.rss()
        await self.warm_up()
        base = target.rss()
        with Probe(target.pids, target.redis_pid) as probe:
            clients, took = await connect_many(
                self.specs(0, n, "idle"),
                Sink(),
                concurrency=plan.connect_concurrency,
                client_class=target.client_class,
            )
        settled = await self.settle(n)
        rss = target.rss()
        result = {
            "connections": n,
            "concurrency": plan.connect_concurrency,
            "connect_s": round(took, 3),
            "connections_per_s": round(n / took, 1),
            "rss_start_kib": rss_start,
            "rss_baseline_kib": base,
            "rss_kib": rss,
            "kib_per_connection": round((rss - base) / n, 2),
            "generator_cpu": probe.generator_cpu,
            "server_cpu": probe.server_cpu,
            "other_cpu": probe.other_cpu,
            "generator_bound": probe.generator_cpu > GENERATOR_BOUND,
            **settled,
        }
        self.log(
            f"  W3 {n} idle WebSockets: {result['connections_per_s']:.0f} conn/s "
            f"({took:.2f} s, gen cpu {probe.generator_cpu:.0%}, server "
            f"{'+'.join(f'{c:.0%}' for c in probe.server_cpu)}); RSS {base / 1024:.1f} -> "
            f"{rss / 1024:.1f} MiB = {result['kib_per_connection']} KiB/connection"
        )
        for c in clients:
            c.close()
        await self.settle(0)
        return result

    async def idle_sse(self) -> dict:
        """The gateway's memory per idle SSE stream: bench/sse_scenarios.py's
        sse-idle, on this target's processes."""
        plan = self.plan
        target = self.target
        sp = ScenarioPlan(
            clients=plan.max_clients,
            sse_streams=plan.max_clients,
            sse_hold_s=plan.sse_hold_s,
            quiet_wait_s=0.0,
            pool_size=4,
        )
        session = Session(
            backend=target.backend,
            server=target.server,
            plan=sp,
            http_client="raw",
            redis_url=self.redis_url,
            server_cpus=None,
            log=self.log,
        )
        session.gateways = list(target.gateways)
        session.redis_pid = target.redis_pid
        try:
            await session.open_pools()
            await session.sse_idle()
        finally:
            await session.close()
            session.gateways = []  # they are the target's: it stops them
            shutil.rmtree(session.work, ignore_errors=True)
        idle = session.result["sse_idle"]
        point = idle["points"][-1]
        return {
            "streams": point["streams"],
            "kib_per_stream": point["kib_per_stream"],
            "streams_per_s": point["streams_per_s"],
            "rss_baseline_kib": idle["rss_baseline_kib"],
            "rss_kib": point["rss_kib"],
            "held": idle["hold"]["held"],
        }

    # -- steps -----------------------------------------------------------------------------
    async def wait_quiet(self) -> tuple[float, float, float]:
        """Wait (bounded) for the last step's stragglers, for the server to work
        off its backlog, and for other processes. Returns (seconds waited for the
        server, seconds waited in all, cores other processes used at the end)."""
        plan = self.plan
        started = time.monotonic()
        # Frames of an earlier step still arriving: let them pass first.
        while (
            time.monotonic() - self.recorder.last_any < plan.stale_quiet_s
            and time.monotonic() - started < 5
        ):
            await asyncio.sleep(0.05)
        while time.monotonic() - started < plan.idle_max_s:
            with Probe(self.target.pids) as probe:
                await asyncio.sleep(plan.idle_window_s)
            if sum(probe.server_cpu) < plan.idle_cpu:
                break
        server_wait = round(time.monotonic() - started, 1)
        other = 0.0
        while True:
            with Probe(self.target.pids, self.target.redis_pid) as probe:
                await asyncio.sleep(0.3 if plan.quiet_wait_s else 0.0)
            other = probe.other_cpu
            if other < plan.quiet_cpu or time.monotonic() - started >= plan.quiet_wait_s:
                return server_wait, round(time.monotonic() - started, 1), round(other, 2)

    async def schedule(self, rate: float, total: int, fire, pools=()) -> tuple[int, bool, float]:
        """Call `fire(i, scheduled)` at t0 + i/rate for i < total (open loop).

        Cut short (aborted) when the generator itself, or the requests queued in
        its HTTP pools, fall more than `abort_lag_s` behind the schedule."""
        lag = self.plan.abort_lag_s
        start = time.monotonic() + 0.01
        i = 0
        max_outstanding = sum(p.size for p in pools) + rate * lag
        while i < total:
            now = time.monotonic()
            due = min(total, int((now - start) * rate) + 1)
            if i < due and now - (start + i / rate) > lag:
                return i, True, start
            while i < due:
                fire(i, start + i / rate)
                i += 1
            if pools:
                oldest = min((p.oldest_pending() or now for p in pools), default=now)
                if now - oldest > lag or sum(p.outstanding for p in pools) > max_outstanding:
                    for p in pools:
                        p.drop_pending()
                    return i, True, start
            # uvloop rounds timers to whole milliseconds, and a delay of 0.5 ms
            # or less to none: the loop would spin. Sleep 1 ms at least; the
            # sends then due go out together, each timed from its own schedule.
            await asyncio.sleep(max(0.001, start + i / rate - time.monotonic()))
        return i, False, start

    async def drain(self, progress, expected: int, pools=()) -> None:
        """Wait for the HTTP answers, then for the deliveries still owed."""
        plan = self.plan
        deadline = time.monotonic() + 30
        while sum(p.outstanding for p in pools) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        hard = time.monotonic() + plan.drain_max_s
        last, changed = progress(), time.monotonic()
        while progress() < expected:
            now = time.monotonic()
            if now - changed > plan.drain_s or now > hard:
                break
            await asyncio.sleep(0.01)
            seen = progress()
            if seen != last:
                last, changed = seen, time.monotonic()

    def new_step(self, workload: str, rate: float, offered: float, limit_ms: float) -> StepResult:
        self.step_id += 1
        return StepResult(
            scenario=workload,
            rate=rate,
            offered_deliveries_per_s=offered,
            duration_s=self.plan.step_seconds,
            limit_ms=limit_ms,
        )

    def finish(self, result: StepResult, lat: array, probe: Probe, last: float, start: float):
        result.__dict__.update(percentiles(lat))
        span = max(result.requests_sent / result.rate if result.rate else 0, last - start, 1e-6)
        result.achieved_deliveries_per_s = round(result.received / span, 1)
        extra = probe.fill(result)
        result.clients_down = sum(1 for c in self.clients if c.closed.done())
        result.judge()
        out = result.as_dict()
        out.update(extra)
        out["generator_bound"] = result.generator_cpu > GENERATOR_BOUND
        line = describe_step(result)
        if extra["other_on_server_core"] is not None:
            line += (
                f" | others on server core {extra['other_on_server_core']:.2f}, "
                f"on generator core {extra['other_on_generator_core']:.2f}"
            )
        if out["generator_bound"]:
            line += " | GENERATOR-BOUND"
        self.log("  " + line)
        return out

    async def ladder(self, rates: list, run_step) -> list[dict]:
        """Steps at rising rates until `stop_after_failures` fail in a row."""
        plan = self.plan
        steps, failures, retries = [], 0, 0
        for rate in rates:
            quiet = await self.wait_quiet()
            step = await run_step(rate)
            step["server_idle_wait_s"], step["quiet_wait_s"], step["other_cpu_before"] = quiet
            if not step["passed"] and noisy(step, plan) and retries < plan.max_noisy_retries:
                retries += 1
                self.log(
                    f"  ! other processes used {step['other_cpu']:.2f} cores "
                    f"({step.get('other_on_server_core')} of the server's): re-running"
                )
                await self.wait_quiet()
                again = await run_step(rate)
                again["noisy_retry_of"] = {
                    "p99_ms": step["p99_ms"],
                    "lost": step["lost"],
                    "other_cpu": step["other_cpu"],
                }
                step = again
            steps.append(step)
            failures = 0 if step["passed"] else failures + 1
            if failures >= plan.stop_after_failures or step["clients_down"]:
                break
        return steps

    # -- W1: fan-out --------------------------------------------------------------------------
    async def fanout(self, subscribers: int) -> dict:
        self.log(f"  W1 fan-out to {subscribers} subscribers")
        steps = await self.ladder(
            self.plan.fanout_rates, lambda rate: self.fanout_step(rate, subscribers)
        )
        return {"subscribers": subscribers, "steps": steps}

    async def fanout_step(self, rate: float, subscribers: int) -> dict:
        plan = self.plan
        target = self.target
        result = self.new_step("w1", rate, rate * subscribers, plan.fanout_limit_ms)
        step = self.step_id
        total = max(1, int(rate * plan.step_seconds))
        rec = self.recorder
        rec.reset(step, total, cache=True)
        closed_before = len(rec.closed)
        publisher = self.publisher
        clients = self.clients
        for c in clients:
            c.heard = 0

        def fire(i, scheduled):
            target.publish(publisher, CHANNEL, {"k": step, "s": i, "t": scheduled})

        gc.collect()
        gc.disable()
        try:
            with Probe(target.pids, target.redis_pid) as probe:
                sent, aborted, start = await self.schedule(rate, total, fire)
                expected = sent * subscribers
                await self.drain(lambda: rec.received, expected)
        finally:
            gc.enable()
        result.requests_sent = result.requests_accepted = sent
        result.aborted = aborted
        result.expected = expected
        result.received = rec.received
        # Every subscriber must get every message once: counted per message and
        # per client, so that a duplicate on one client cannot hide a loss on another.
        counts = rec.counts[:sent]
        result.lost = max(
            sum(max(0, subscribers - c) for c in counts),
            sum(max(0, sent - c.heard) for c in clients),
        )
        result.duplicates = max(
            sum(max(0, c - subscribers) for c in counts),
            sum(max(0, c.heard - sent) for c in clients),
        )
        result.stale = rec.stale
        result.clients_closed = len(rec.closed) - closed_before
        return self.finish(result, rec.lat, probe, rec.last_heard, start)

    # -- W2: unicast and batches over HTTP ------------------------------------------------------
    async def unicast_and_batch(self) -> dict:
        target = self.target
        if not target.has_http:
            self.log("  W2: no HTTP push API on this target: skipped")
            return {"skipped": "no HTTP push API"}
        plan = self.plan
        self.pools = [RawPool(HOST, port, plan.pool_size, self._on_push) for port in target.ports]
        for pool in self.pools:
            await pool.start()
        try:
            self.log(f"  W2 unicast ({target.push_path})")
            unicast = await self.ladder(plan.unicast_rates, lambda r: self.push_step(r, 1))
            self.log(f"  W2 batches of {plan.batch_size} ({target.batch_path})")
            batch = await self.ladder(
                plan.batch_rates, lambda r: self.push_step(r, plan.batch_size)
            )
        finally:
            for pool in self.pools:
                await pool.close()
            self.pools = []
        return {"unicast": {"steps": unicast}, "batch": {"steps": batch}}

    def _on_push(self, ctx, status: int, body: bytes, now: float) -> None:
        step, first, count = ctx
        if step != self.step_id:
            return
        st = self._push_state
        if status in (200, 202):
            st["accepted"] += 1
            st["accepted_seq"][first : first + count] = b"\1" * count
        else:
            key = str(status)
            st["errors"][key] = st["errors"].get(key, 0) + 1
            if len(st["samples"]) < 3:
                st["samples"].append(body[:300].decode(errors="replace"))

    async def push_step(self, rate: float, per_request: int) -> dict:
        plan = self.plan
        target = self.target
        batch = per_request > 1
        result = self.new_step(
            "w2-batch" if batch else "w2-push",
            rate,
            rate * per_request,
            plan.batch_limit_ms if batch else plan.unicast_limit_ms,
        )
        step = self.step_id
        total = max(1, int(rate * plan.step_seconds))
        seqs = total * per_request
        n = len(self.clients)
        targets = [self.rng.randrange(n) for _ in range(seqs)]
        rec = self.recorder
        rec.reset(step, seqs, targets)
        closed_before = len(rec.closed)
        self._push_state = st = {
            "accepted": 0,
            "errors": {},
            "samples": [],
            "accepted_seq": bytearray(seqs),
        }
        pools = self.pools
        npools = len(pools)
        for pool in pools:
            pool.lag.clear()

        def fire(i, scheduled):
            first = i * per_request
            if batch:
                items = [
                    (f"bench-{targets[s]}", {"k": step, "s": s, "t": scheduled})
                    for s in range(first, first + per_request)
                ]
                path, body = target.batch_path, target.batch_body(items)
            else:
                data = {"k": step, "s": first, "t": scheduled}
                path, body = target.push_path, target.push_body(f"bench-{targets[first]}", data)
            # Each user's clients live on one process: push where the client is
            # half the time, elsewhere the other half (crossing Redis).
            pools[i % npools].submit(path, body, (step, first, per_request), scheduled)

        gc.collect()
        gc.disable()
        try:
            with Probe(target.pids, target.redis_pid) as probe:
                sent, aborted, start = await self.schedule(rate, total, fire, pools)
                await self.drain(lambda: rec.received, 0, pools)
                expected = sum(st["accepted_seq"])
                await self.drain(lambda: rec.received, expected)
        finally:
            gc.enable()
        result.requests_sent = sent
        result.requests_accepted = st["accepted"]
        result.request_errors = st["errors"]
        result.error_samples = st["samples"]
        result.aborted = aborted
        result.expected = expected
        result.received = rec.received
        accepted = st["accepted_seq"]
        result.lost = sum(1 for s, c in enumerate(rec.counts) if accepted[s] and c == 0)
        result.duplicates = sum(c - 1 for c in rec.counts if c > 1)
        result.misrouted = rec.misrouted
        result.stale = rec.stale
        result.clients_closed = len(rec.closed) - closed_before
        lags = sorted(x for p in pools for x in p.lag)
        result.generator_lag_p99_ms = ms(percentile(lags, 99))
        return self.finish(result, rec.lat, probe, rec.last_heard, start)

    # -- W4: send with reply ----------------------------------------------------------------
    async def replies(self) -> dict:
        plan = self.plan
        target = self.target
        self.bot = await target.connect_bot(target.port_for(0))
        senders = self.clients[: max(1, min(plan.reply_senders, len(self.clients)))]
        for client in senders:
            target.prepare_sender(client)
        out = {"bot": BOT, "senders": len(senders)}
        try:
            self.log(f"  W4 send with reply over WebSocket ({len(senders)} senders)")
            out["ws"] = {
                "steps": await self.ladder(
                    plan.reply_rates, lambda r: self.ws_reply_step(r, senders)
                )
            }
            if target.has_http:
                self.log(f"  W4 send with reply over HTTP ({target.send_path})")
                out["http"] = {"steps": await self.ladder(plan.reply_rates, self.http_reply_step)}
            else:
                out["http"] = {"skipped": "no HTTP API"}
        finally:
            target.forget_replies()
            out["bot_answered"] = getattr(self.bot.bot_sink, "answered", None)
            self.bot.close()
            self.bot = None
        return out

    def _reply_state(self) -> dict:
        return {"ok": 0, "lat": array("d"), "last": time.monotonic(), "errors": {}}

    async def _bot_alive(self) -> None:
        """A step past the server's capacity may have had the bot closed (a
        slow consumer gets 1013): the next step starts with a new one."""
        if self.bot.closed.done():
            self.log(f"  the bot was closed ({self.bot.close_code}): connecting it again")
            self.target.forget_replies()
            self.bot = await self.target.connect_bot(self.target.port_for(0))

    async def ws_reply_step(self, rate: float, senders: list) -> dict:
        plan = self.plan
        target = self.target
        result = self.new_step("w4-ws", rate, rate, plan.reply_limit_ms)
        step = self.step_id
        total = max(1, int(rate * plan.step_seconds))
        st = self._reply_state()
        nsend = len(senders)
        await self._bot_alive()
        closed_before = len(self.recorder.closed)
        bot_closed = self.bot.closed.done()

        def fire(i, scheduled):
            def done(now, reply, scheduled=scheduled):
                st["ok"] += 1
                st["lat"].append(now - scheduled)
                st["last"] = now

            target.ws_send(senders[i % nsend], f"{self.tag}-{step}-{i}", {"k": step, "s": i}, done)

        gc.collect()
        gc.disable()
        try:
            with Probe(target.pids, target.redis_pid) as probe:
                sent, aborted, start = await self.schedule(rate, total, fire)
                await self.drain(lambda: st["ok"], sent)
        finally:
            gc.enable()
        target.forget_replies()
        result.requests_sent = result.requests_accepted = result.expected = sent
        result.received = st["ok"]
        result.lost = sent - st["ok"]
        result.aborted = aborted
        result.clients_closed = len(self.recorder.closed) - closed_before
        if self.bot.closed.done() and not bot_closed:
            result.clients_closed += 1
        return self.finish(result, st["lat"], probe, st["last"], start)

    async def http_reply_step(self, rate: float) -> dict:
        plan = self.plan
        target = self.target
        result = self.new_step("w4-http", rate, rate, plan.reply_limit_ms)
        step = self.step_id
        total = max(1, int(rate * plan.step_seconds))
        st = self._reply_state()
        errors = st["errors"]
        await self._bot_alive()

        def record(ctx, ok: bool, kind: str, now: float):
            ctx_step, scheduled = ctx
            if ctx_step != step:
                return
            if ok:
                st["ok"] += 1
                st["lat"].append(now - scheduled)
                st["last"] = now
            else:
                errors[kind] = errors.get(kind, 0) + 1

        if target.http_send_events:
            pools = [
                SSEPool(
                    HOST,
                    port,
                    plan.reply_pool_size,
                    lambda ctx, kind, now: record(ctx, kind == "response", kind, now),
                )
                for port in target.ports
            ]
        else:
            pools = [
                RawPool(
                    HOST,
                    port,
                    plan.reply_pool_size,
                    lambda ctx, status, body, now: record(ctx, status == 200, str(status), now),
                )
                for port in target.ports
            ]
        for pool in pools:
            await pool.start()
        npools = len(pools)

        def fire(i, scheduled):
            body = target.send_body(
                f"{self.tag}-{step}-{i}", {"k": step, "s": i}, plan.reply_timeout_s
            )
            pools[i % npools].submit(target.send_path, body, (step, scheduled), scheduled)

        gc.collect()
        gc.disable()
        try:
            with Probe(target.pids, target.redis_pid) as probe:
                sent, aborted, start = await self.schedule(rate, total, fire, pools)
                await self.drain(lambda: st["ok"], sent, pools)
        finally:
            gc.enable()
            for pool in pools:
                await pool.close()
        result.requests_sent = sent
        result.requests_accepted = st["ok"]
        result.request_errors = errors
        result.expected = sent
        result.received = st["ok"]
        result.lost = max(0, sent - st["ok"] - sum(errors.values()))
        result.aborted = aborted
        return self.finish(result, st["lat"], probe, st["last"], start)


# --- the run -----------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    p.add_argument("--targets", default=",".join(TARGETS), help=f"subset of {','.join(TARGETS)}")
    p.add_argument("--workloads", default=",".join(WORKLOADS), help="subset of w1,w2,w3,w4")
    p.add_argument(
        "--backend",
        choices=["memory", "redis", "both"],
        default=None,
        help="the gateway's backend(s): both (memory with --smoke)",
    )
    p.add_argument("--clients", type=int, default=None, help="load clients (1000; 50 --smoke)")
    p.add_argument(
        "--max-clients",
        type=int,
        default=None,
        help="W1's second size and W3's idle connections (5000; 100 --smoke)",
    )
    p.add_argument("--smoke", action="store_true", help="small sizes, one or two short steps")
    p.add_argument("--step-seconds", type=float, default=None, help="length of a step (5)")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument("--no-docs", action="store_true", help="do not write under docs/")
    p.add_argument(
        "--render", metavar="JSON", help="re-render the docs from a saved run, run nothing"
    )
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    return p.parse_args(argv)


def make_plan(args) -> Plan:
    plan = Plan.for_smoke() if args.smoke else Plan()
    if args.clients:
        plan.clients = args.clients
    if args.max_clients is not None:
        plan.max_clients = args.max_clients
    if args.step_seconds:
        plan.step_seconds = args.step_seconds
    return plan


def noisy(step: dict, plan: Plan) -> bool:
    """Other processes took enough CPU during a step to spoil it: in all more
    than `noisy_cpu` cores, or a fifth of the server's core."""
    on_server = step.get("other_on_server_core")
    return step["other_cpu"] > plan.noisy_cpu or (on_server is not None and on_server > 0.2)


def pinning(no_pin: bool) -> tuple[set[int] | None, set[int] | None]:
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def harness_broken(run: dict) -> list[str]:
    """What says the harness itself broke (not that a target was slow)."""
    problems = []
    for t in run["targets"]:
        problems += [f"{t['label']}: {e}" for e in t["errors"]]
        for name, steps in report.ladders(t):
            if steps and all(s["received"] == 0 for s in steps):
                problems.append(f"{t['label']}: {name}: nothing received at any step")
    return problems


async def run_all(args, plan: Plan, targets: list[str], backends: list[str], run: dict) -> None:
    workloads = run["workloads"]
    t0 = time.monotonic()

    def log(line: str) -> None:
        elapsed = time.monotonic() - t0
        print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {line}", flush=True)

    harness = Harness(
        plan,
        workloads=workloads,
        redis_url=args.redis_url,
        server_cpus=set(run["pinning"]["servers"] or ()) or None,
        log=log,
    )
    harness.logs_dir = RESULTS / f"{run['stamp']}-logs"
    for name in targets:
        for backend in backends if name.startswith("gateway-") else ["-"]:
            target = make_target(name, backend, harness)
            print(f"\n== {target.label} ==", flush=True)
            run["targets"].append(await harness.run_target(target))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        run = orjson.loads(Path(args.render).read_bytes())
        print(report.table(run))
        report.write_docs(run)
        print(f"updated {report.DOC}, {report.JSON_OUT}, {report.PNG_OUT}")
        return 0
    plan = make_plan(args)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    workloads = [w.strip().lower() for w in args.workloads.split(",") if w.strip()]
    unknown = sorted(set(targets) - set(TARGETS)) + sorted(set(workloads) - set(WORKLOADS))
    if unknown:
        raise SystemExit(f"unknown targets or workloads: {', '.join(unknown)}")
    backend = args.backend or ("memory" if args.smoke else "both")
    backends = ["memory", "redis"] if backend == "both" else [backend]
    raise_file_limit(plan.max_clients + plan.clients + 2000)
    gen_cpus, server_cpus = pinning(args.no_pin)
    if gen_cpus:
        os.sched_setaffinity(0, gen_cpus)
        Probe.generator_cores, Probe.server_cores = gen_cpus, server_cpus
    started = datetime.datetime.now(datetime.UTC)
    run = {
        "kind": "peers",
        **run_header("bench.compare", started, gen_cpus, server_cpus),
        "stamp": started.strftime("%Y%m%dT%H%M%S") + ("-smoke" if args.smoke else ""),
        "smoke": plan.smoke,
        "plan": plan.__dict__,
        "targets_run": targets,
        "backends": backends,
        "workloads": workloads,
        "loadavg_start": os.getloadavg(),
        "targets": [],
    }
    print(
        f"bench.compare at {run['revision']}: targets {targets}, gateway backends {backends}, "
        f"workloads {workloads}, {plan.clients} clients (max {plan.max_clients}), "
        f"generator on cores {run['pinning']['generator']}, servers on "
        f"{run['pinning']['servers']}; load average {os.getloadavg()}",
        flush=True,
    )
    t0 = time.monotonic()
    import uvloop

    try:
        uvloop.run(run_all(args, plan, targets, backends, run))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        run["interrupted"] = True
    run["seconds"] = round(time.monotonic() - t0, 1)
    run["loadavg_end"] = os.getloadavg()
    print()
    print(report.table(run))
    notes = report.notes(run)
    if notes:
        print()
        print("\n".join(notes))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"peers-{run['stamp']}.json"
    out.write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print(f"\nresults: {out}")
    if args.smoke or args.no_docs:
        png = RESULTS / f"peers-{run['stamp']}.png"
        report.write_chart(run, png)
        print(f"chart: {png}")
    else:
        report.write_docs(run)
        print(f"updated {report.DOC}, {report.JSON_OUT}, {report.PNG_OUT}")
    print(f"took {run['seconds']} s")
    broken = harness_broken(run)
    if broken or run.get("interrupted"):
        print("\nthe harness broke:\n  " + "\n  ".join(broken), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
