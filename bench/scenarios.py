"""The scenarios: idle memory, unicast pushes, batch pushes, channel fan-out,
send with reply; and (bench/sse_scenarios.py) the SSE ones.

One `Session` is one backend on one ASGI server: it starts the gateway
process(es), connects the clients, runs each scenario's ladder of open-loop
steps, and stops everything.

Open loop: step k at rate R schedules request i at t0 + i/R whatever the
gateway does; every payload carries its scheduled time (`data.t`, the
generator's monotonic clock), and latency is the time a client hears the
message minus that scheduled time. Waiting in the generator's queue for a
free HTTP connection therefore counts, as it would for a real producer.
"""

import asyncio
import gc
import random
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from . import gateway as gw
from .channel_scenarios import ChannelScenarios
from .httpclient import POOLS
from .sse_scenarios import SSEScenarios
from .sseclient import SSEPool
from .stats import StepResult, ms, percentile
from .wsclient import Sink, WSClient, connect, connect_many

HOST = "127.0.0.1"
UNICAST_RATES = (25, 50, 75, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000)


@dataclass
class Plan:
    """How much load, and for how long."""

    clients: int = 1000
    memory_max: int = 5000  # top up to this many idle clients for the memory scenario
    spread_s: float = 20.0  # connect the load clients over this long (server ping interval)
    fresh_for_load: bool = True  # restart the gateway between the memory and load scenarios
    step_seconds: float = 5.0
    # Rising rates; a ladder stops after `stop_after_failures` failing steps in a
    # row, so the top rungs only run on a gateway fast enough to need them.
    unicast_rates: list = field(default_factory=lambda: list(UNICAST_RATES))  # pushes/s
    batch_size: int = 100
    batch_rates: list = field(  # requests/s, x batch_size deliveries/s
        default_factory=lambda: [1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200]
    )
    fanout_rates: list = field(  # pushes/s, x clients deliveries/s
        default_factory=lambda: [1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 150, 200]
    )
    # Send with reply (POST /api/v1/send answered by an echo bot): closed loop
    # with this many concurrent callers, then an open-loop ladder.
    reply_callers: list = field(default_factory=lambda: [1, 50, 200])
    reply_rates: list = field(  # round trips/s
        default_factory=lambda: [25, 50, 100, 150, 200, 300, 400, 500]
    )
    reply_limit_ms: float = 50.0
    reply_pool_size: int = 64  # HTTP connections per gateway process, open loop
    reply_timeout_s: float = 10.0  # the `timeout` of each send
    unicast_limit_ms: float = 50.0
    # A batch is a bulk call: validating and publishing 100 items takes tens of
    # milliseconds by itself, so it is held to the fan-out bound.
    batch_limit_ms: float = 250.0
    fanout_limit_ms: float = 250.0
    pool_size: int = 32  # keep-alive HTTP connections per gateway process
    abort_lag_s: float = 1.0  # give a step up when the generator's queue is this late
    drain_s: float = 2.0  # wait this long without progress for the last deliveries
    stop_after_failures: int = 2  # consecutive failing steps end a ladder
    # The machine may be shared: before a step, wait up to `quiet_wait_s` for
    # other processes to use less than `quiet_cpu` cores; a failing step during
    # which they used more than `noisy_cpu` is run once more.
    quiet_wait_s: float = 5.0
    quiet_cpu: float = 0.25
    noisy_cpu: float = 0.3
    max_noisy_retries: int = 2  # per ladder, to keep a run bounded
    # Server-Sent Events (`GET /events/`). sse-fanout uses `clients` streams
    # and the fan-out rates and bound.
    sse_streams: int = 5000  # idle streams held (sse-idle)
    sse_hold_s: float = 17.0  # hold them past one keep-alive tick (15 s)
    sse_channel: str = "bench-sse"
    replay_messages: int = 1000  # missed while away, replayed on reconnect
    replay_repeats: int = 5
    # The channel scenarios (bench/channel_scenarios.py).
    presence_members: int = 1000
    presence_channel: str = "bench-presence"
    presence_queries: int = 300
    publish_rates: list = field(  # publish frames/s from one member, x members deliveries/s
        default_factory=lambda: [1, 2, 5, 10, 15, 20, 30, 50]
    )
    typing_rate: float = 5.0  # typing frames/s from one member, for one step
    registry_connections: int = 2000

    @classmethod
    def quick(cls, clients: int) -> "Plan":
        return cls(
            clients=clients,
            memory_max=0,
            spread_s=0.0,
            fresh_for_load=False,
            step_seconds=1.5,
            unicast_rates=[50, 100],
            batch_rates=[2],
            fanout_rates=[2, 5],
            reply_callers=[1, 20],
            reply_rates=[25, 50],
            drain_s=1.0,
            sse_streams=300,
            sse_hold_s=1.0,
            replay_messages=200,
            replay_repeats=2,
            presence_members=200,
            presence_queries=50,
            publish_rates=[2, 5],
            registry_connections=300,
            quiet_wait_s=0.0,
            noisy_cpu=float("inf"),
        )


class Recorder(Sink):
    """Counts and times the messages of the current step as clients hear them."""

    def __init__(self) -> None:
        self.step = -1
        self.counts: list[int] = []
        self.targets: list[int] | None = None
        self.latencies: list[float] = []
        self.received = 0
        self.stale = 0
        self.misrouted = 0
        self.closed: list[WSClient] = []
        self.last_heard = 0.0

    def reset(self, step: int, size: int, targets: list[int] | None) -> None:
        self.step = step
        self.counts = [0] * size
        self.targets = targets
        self.latencies = []
        self.received = 0
        self.stale = 0
        self.misrouted = 0
        self.last_heard = time.monotonic()

    def on_message(self, client: WSClient, payload: bytes, now: float) -> None:
        data = orjson.loads(payload)["data"]
        if not isinstance(data, dict) or data.get("k") != self.step:
            self.stale += 1
            return
        seq = data["s"]
        self.counts[seq] += 1
        self.latencies.append(now - data["t"])
        self.received += 1
        self.last_heard = now
        if self.targets is not None and self.targets[seq] != client.index:
            self.misrouted += 1

    def on_closed(self, client: WSClient) -> None:
        self.closed.append(client)


class EchoBot(Sink):
    """The public account `ci_bot`: answers every message at once with a final
    `response` echoing its correlation id and data."""

    def __init__(self) -> None:
        self.answered = 0
        self.closed = False

    def on_message(self, client: WSClient, payload: bytes, now: float) -> None:
        frame = orjson.loads(payload)
        client.send_json(
            {
                "type": "response",
                "correlation_id": frame.get("correlation_id"),
                "data": frame.get("data"),
                "is_final": True,
            }
        )
        self.answered += 1

    def on_closed(self, client: WSClient) -> None:
        self.closed = True


class Session(SSEScenarios, ChannelScenarios):
    """One backend on one ASGI server, from start to stop."""

    def __init__(
        self,
        *,
        backend: str,
        server: str,
        plan: Plan,
        http_client: str,
        redis_url: str,
        server_cpus: set[int] | None,
        log=print,
    ):
        self.backend = backend
        self.server = server
        self.plan = plan
        self.http_client = http_client
        self.redis_url = redis_url
        self.server_cpus = server_cpus
        self.log = log
        self.work = Path(tempfile.mkdtemp(prefix=f"bench-{backend}-"))
        self.gateways: list[gw.Gateway] = []
        self.pools: list = []
        self.clients: list[WSClient] = []
        self.recorder = Recorder()
        self.redis_prefix: str | None = None
        self.redis_pid: int | None = None
        self.http_resent = 0  # requests sent again after a keep-alive race
        self.keep_logs: Path | None = None  # a path prefix for copies of the gateway logs
        self.rng = random.Random(1)
        self.step_id = 0
        self.result: dict = {"backend": backend, "server": server}

    # -- life ---------------------------------------------------------------------
    def start(self, phase: str = "load") -> None:
        """Start fresh gateway process(es) (and a fresh Redis key prefix)."""
        self.phase = phase
        env = {}
        count = 1
        if self.backend == "redis":
            gw.check_redis(self.redis_url)
            self.redis_pid = gw.redis_pid(self.redis_url)
            self.redis_prefix = gw.redis_prefix()
            env = {"REDIS_URL": self.redis_url, "REDIS_PREFIX": self.redis_prefix}
            count = 2
        work = self.work / phase
        for n in range(count):
            # Processes of one gateway share a database, as CONTRACT section 10 says.
            self.gateways.append(
                gw.start_gateway(
                    work / f"p{n}",
                    server=self.server,
                    cpus=self.server_cpus,
                    env_overrides={**env, "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}"},
                )
            )
        self.result.setdefault("processes", {})[phase] = [
            {"port": g.port, "pid": g.pid} for g in self.gateways
        ]

    async def open_pools(self) -> None:
        pool_class = POOLS[self.http_client]
        self.pools = [
            pool_class(HOST, g.port, self.plan.pool_size, self._on_response) for g in self.gateways
        ]
        for pool in self.pools:
            await pool.start()

    async def close(self) -> None:
        self.http_resent += sum(getattr(p, "resent", 0) for p in self.pools)
        for client in self.clients:
            client.close()
        self.clients = []
        for pool in self.pools:
            await pool.close()
        self.pools = []
        await asyncio.sleep(0.2)

    def stop_gateways(self) -> None:
        """Stop the gateway processes; keep their logs and what they complained of."""
        if not self.gateways:
            return
        phase = getattr(self, "phase", "load")
        problems = []
        for n, g in enumerate(self.gateways):
            g.stop()
            problems += [f"[{g.port}] {line}" for line in gw.log_problems(g.log())]
            if self.keep_logs is not None:
                name = f"{self.keep_logs.name}-{self.server}-{self.backend}-{phase}-p{n}.log"
                saved = self.keep_logs.with_name(name)
                saved.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(g.log_path, saved)
                self.result.setdefault("logs", []).append(saved.name)
        self.gateways = []
        self.result.setdefault("log_problems_by_phase", {})[phase] = {
            "count": len(problems),
            "kinds": gw.problem_kinds(problems),
            "sample": problems[:10],
        }
        self.result["log_problems"] = self.result.get("log_problems", 0) + len(problems)
        self.result["log_problem_kinds"] = self.result.get("log_problem_kinds", []) + [
            [f"({phase}) {kind}", count] for kind, count in gw.problem_kinds(problems)
        ]
        self.result["log_problem_sample"] = (
            self.result.get("log_problem_sample", []) + (problems[:10])
        )
        if self.redis_prefix:
            cleared = gw.clear_redis_prefix(self.redis_url, self.redis_prefix)
            self.result.setdefault("redis_keys_cleared", {})[phase] = cleared

    def stop(self) -> None:
        from .sseclient import RETRIES as SSE_RETRIES
        from .wsclient import RETRIES

        self.result["handshake_retries"] = dict(RETRIES)
        self.result["sse_open_retries"] = dict(SSE_RETRIES)
        self.result["http_resent"] = self.http_resent
        self.stop_gateways()
        shutil.rmtree(self.work, ignore_errors=True)

    def rss(self) -> int:
        return sum(gw.rss_kib(g.pid) for g in self.gateways)

    def health_connections(self, key: str = "connections") -> int:
        return sum(self.health_each(key))

    def health_each(self, key: str = "connections") -> list[int]:
        """Per process, what /health counts: `connections` (all), `websocket` or `sse`."""
        return [g.health()[key] for g in self.gateways]

    def specs(self, first: int, last: int, name: str = "bench") -> list[tuple]:
        """Clients first..last-1, alternating between the gateway processes."""
        return [
            (i, f"{name}-{i}", HOST, self.gateways[i % len(self.gateways)].port)
            for i in range(first, last)
        ]

    # -- scenario 3: memory per idle connection, and connection rate ------------------
    async def warm_up(self) -> None:
        """Touch every code path once so that lazy imports are not counted."""
        clients, _ = await connect_many(
            [
                (i, f"warm-{i}", HOST, self.gateways[i % len(self.gateways)].port)
                for i in range(10 * len(self.gateways))
            ],
            Sink(),
        )
        for c in clients[:2]:
            c.send_json({"action": "subscribe", "channel": "warm"})
        await asyncio.sleep(0.3)
        done = asyncio.get_running_loop().create_future()
        left = [len(clients) + 2]

        def answered(*_):
            left[0] -= 1
            if left[0] == 0 and not done.done():
                done.set_result(None)

        for i, c in enumerate(clients):
            pool = self.pools[i % len(self.pools)]
            pool.on_response = answered
            pool.submit(
                "/api/v1/push", orjson.dumps({"user_id": c.user, "data": {"w": 1}}), None, 0
            )
        self.pools[0].submit(
            "/api/v1/push/batch",
            orjson.dumps([{"user_id": c.user, "data": {"w": 2}} for c in clients]),
            None,
            0,
        )
        self.pools[0].submit(
            "/api/v1/push", orjson.dumps({"channel": "warm", "data": {"w": 3}}), None, 0
        )
        await asyncio.wait_for(done, 30)
        for pool in self.pools:
            pool.on_response = self._on_response
            pool.lag.clear()
        await asyncio.sleep(0.3)
        for c in clients:
            c.close()
        await self._settle(0)

    async def _settle(
        self, connections: int, timeout: float = 60, key: str = "connections"
    ) -> dict:
        """Wait until the gateway counts `connections` live sockets (of the
        /health count `key`), then a second more.

        Returns how long that took and the slowest /health answer meanwhile
        (a gateway busy with a crowd of disconnections answers late).
        """
        started = time.monotonic()
        deadline = started + timeout
        slowest, seen, timeouts = 0.0, None, 0
        while time.monotonic() < deadline:
            asked = time.monotonic()
            try:
                seen = await asyncio.to_thread(self.health_connections, key)
            except OSError:  # timeouts included
                timeouts += 1
                seen = None
            slowest = max(slowest, time.monotonic() - asked)
            if seen == connections:
                break
            await asyncio.sleep(0.2)
        else:
            each = await asyncio.to_thread(self.health_each, key)
            self.log(
                f"  ! after {timeout:.0f} s the gateway counts {seen} {key}, "
                f"not {connections} (per process: {each})"
            )
        took = time.monotonic() - started
        await asyncio.sleep(1.0)
        return {
            "settle_s": round(took, 2),
            "slowest_health_s": round(slowest, 2),
            "health_timeouts": timeouts,
            "counted": seen,
        }

    async def _idle_cpu(self, below: float = 0.1, timeout: float = 30) -> None:
        """Wait until the gateway processes are nearly idle (background clean-up done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before, t0 = sum(gw.cpu_seconds(g.pid) for g in self.gateways), time.monotonic()
            await asyncio.sleep(0.5)
            used = sum(gw.cpu_seconds(g.pid) for g in self.gateways) - before
            if used / (time.monotonic() - t0) < below:
                return

    async def memory_scenario(self) -> None:
        """RSS per idle connection and connections/s; then every client leaves at once."""
        plan = self.plan
        memory: dict = {"rss_start_kib": self.rss()}
        await self.warm_up()
        gc.collect()
        base = self.rss()
        memory["rss_baseline_kib"] = base
        memory["points"] = []
        sink = Sink()
        clients: list[WSClient] = []
        for target in sorted({plan.clients, max(plan.clients, plan.memory_max)}):
            added = target - len(clients)
            more, took = await connect_many(self.specs(len(clients), target, "idle"), sink)
            clients += more
            await self._settle(target)
            rss = self.rss()
            memory["points"].append(
                {
                    "clients": target,
                    "connect_s": round(took, 3),
                    "connections_per_s": round(added / took, 1),
                    "rss_kib": rss,
                    "kib_per_connection": round((rss - base) / target, 2),
                }
            )
            self.note_redis(f"with {target} idle clients")
            self.log(
                f"  {target} idle clients (+{added} in {took:.2f} s, {added / took:.0f}/s): "
                f"RSS {base / 1024:.1f} -> {rss / 1024:.1f} MiB "
                f"({(rss - base) / target:.1f} KiB/connection)"
            )
        for c in clients:
            c.close()
        settled = await self._settle(0)
        memory["close_all"] = {"clients": len(clients), **settled}
        self.log(
            f"  closed {len(clients)} clients at once: the gateway counted {settled['counted']} "
            f"after {settled['settle_s']:.1f} s (slowest /health "
            f"{settled['slowest_health_s']:.1f} s, {settled['health_timeouts']} timed out)"
        )
        await self._idle_cpu()
        self.note_redis("after they all left")
        self.result["memory"] = memory

    async def connect_clients(self) -> None:
        """Connect the load clients, paced over `spread_s`.

        The server pings each connection every 20 s from when it connected
        (`bin/serve`); clients that all connect within a second are all
        pinged in the same tick, which stalls the gateway for ~100 ms every
        20 s. Spreading the connections spreads the pings, as on a server
        whose clients came at different times.
        """
        plan = self.plan
        self.clients, took = await connect_many(
            self.specs(0, plan.clients), self.recorder, spread_s=plan.spread_s
        )
        settled = await self._settle(plan.clients)
        self.result["load_clients_connect_s"] = round(took, 2)
        self.result["load_clients_settle"] = settled
        self.log(f"  {plan.clients} load clients connected over {took:.1f} s")
        self.note_redis("after the load clients connected")
        down = self.clients_down()
        if down:
            self.result["load_clients_closed_before_load"] = down
            self.log(f"  ! {down['count']} load clients were closed by the gateway: {down}")

    def clients_down(self) -> dict | None:
        """The load clients the gateway has closed, by close code."""
        codes: dict[str, int] = {}
        for c in self.clients:
            if c.closed.done():
                key = str(c.close_code)
                codes[key] = codes.get(key, 0) + 1
        return {"count": sum(codes.values()), "close_codes": codes} if codes else None

    def note_redis(self, when: str) -> None:
        """Record how many connections the Redis server holds (gateway pools grow)."""
        if self.backend != "redis":
            return
        n = gw.redis_clients(self.redis_url)
        self.result.setdefault("redis_connections", []).append({"when": when, "count": n})
        self.log(f"  Redis holds {n} client connections {when}")

    # -- the open-loop step -----------------------------------------------------------
    def _on_response(self, ctx, status: int, body: bytes, now: float) -> None:
        step, first, count = ctx
        if step != self.step_id:
            return
        st = self._step_state
        if status == 202:
            st["accepted"] += 1
            receipt = orjson.loads(body)
            st["promised"] += receipt["delivered"]
            for seq in range(first, first + count):
                st["accepted_seq"][seq] = 1
            if count == 1:
                st["ids"][first] = receipt.get("id")
        else:
            key = str(status)
            st["errors"][key] = st["errors"].get(key, 0) + 1
            if len(st["error_samples"]) < 3:
                st["error_samples"].append(body[:300].decode(errors="replace"))

    async def run_step(
        self,
        *,
        scenario: str,
        rate: float,
        per_request: int,
        expected_each: int,
        limit_ms: float,
        make,
        targets: list[int] | None = None,
    ) -> StepResult:
        """Run one open-loop step: `make(i, scheduled, step)` -> (path, body)."""
        plan = self.plan
        self.step_id += 1
        step = self.step_id
        total = max(1, int(rate * plan.step_seconds))
        seqs = total * per_request
        self.recorder.reset(step, seqs, targets)
        closed_before = len(self.recorder.closed)
        self._step_state = {
            "accepted": 0,
            "promised": 0,
            "errors": {},
            "error_samples": [],
            "accepted_seq": bytearray(seqs),
            "ids": [None] * seqs,  # the message id each receipt gave
        }
        for pool in self.pools:
            pool.lag.clear()
        result = StepResult(
            scenario=scenario,
            rate=rate,
            offered_deliveries_per_s=rate * per_request * expected_each,
            duration_s=plan.step_seconds,
            limit_ms=limit_ms,
        )
        result.quiet_wait_s, result.other_cpu_before = await self.wait_quiet()
        gc.collect()
        gc.disable()
        loop = asyncio.get_running_loop()
        cpu0, busy0 = time.process_time(), gw.machine_busy()
        srv0 = [gw.cpu_seconds(g.pid) for g in self.gateways]
        redis0 = gw.cpu_seconds(self.redis_pid) if self.redis_pid else None
        wall0 = time.monotonic()
        start = loop.time() + 0.01
        i = 0
        n_pools = len(self.pools)
        max_outstanding = sum(p.size for p in self.pools) + rate * plan.abort_lag_s
        try:
            while i < total:
                now = loop.time()
                due = min(total, int((now - start) * rate) + 1)
                while i < due:
                    scheduled = start + i / rate
                    path, body = make(i, scheduled, step)
                    self.pools[i % n_pools].submit(
                        path, body, (step, i * per_request, per_request), scheduled
                    )
                    i += 1
                oldest = min(
                    (p.oldest_pending() for p in self.pools if p.oldest_pending()),
                    default=None,
                )
                outstanding = sum(p.outstanding for p in self.pools)
                if (oldest is not None and now - oldest > plan.abort_lag_s) or (
                    outstanding > max_outstanding
                ):
                    result.aborted = True
                    for pool in self.pools:
                        pool.drop_pending()
                    break
                delay = start + i / rate - loop.time()
                await asyncio.sleep(max(0.0, delay))
            result.requests_sent = i
            # Every request written gets its answer, then the deliveries drain.
            deadline = time.monotonic() + 30
            while sum(p.outstanding for p in self.pools) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            st = self._step_state
            expected = sum(st["accepted_seq"]) * expected_each
            rec = self.recorder
            deadline = time.monotonic() + 30
            while rec.received < expected and time.monotonic() < deadline:
                if time.monotonic() - rec.last_heard > plan.drain_s:
                    break
                await asyncio.sleep(0.01)
        finally:
            gc.enable()
        wall = time.monotonic() - wall0
        cpu = time.process_time() - cpu0
        busy = gw.busy_share(busy0, gw.machine_busy())
        st = self._step_state
        rec = self.recorder
        result.requests_accepted = st["accepted"]
        result.request_errors = st["errors"]
        if st["error_samples"]:
            result.error_samples = st["error_samples"]
        result.expected = expected
        result.received = rec.received
        result.promised = st["promised"]
        each = expected_each
        lost = dup = 0
        if hasattr(rec, "tally"):
            # Per stream (SSE): every subscriber must have every message once.
            lost, dup, result.id_errors = rec.tally(st["accepted_seq"], each, st["ids"])
        else:
            for seq, n in enumerate(rec.counts):
                if st["accepted_seq"][seq]:
                    if n < each:
                        lost += each - n
                    elif n > each:
                        dup += n - each
        result.lost = lost
        result.duplicates = dup
        result.misrouted = rec.misrouted
        result.stale = rec.stale
        result.clients_closed = len(rec.closed) - closed_before
        result.clients_down = sum(1 for c in self.clients if c.closed.done())
        lat = sorted(rec.latencies)
        result.p50_ms = ms(percentile(lat, 50))
        result.p90_ms = ms(percentile(lat, 90))
        result.p99_ms = ms(percentile(lat, 99))
        result.max_ms = ms(lat[-1] if lat else None)
        # Over the scheduled span at least: a short tail must not inflate the rate.
        span = max(total / rate, rec.last_heard - start)
        result.achieved_deliveries_per_s = round(rec.received / span, 1)
        lags = sorted(x for p in self.pools for x in p.lag)
        result.generator_lag_p99_ms = ms(percentile(lags, 99))
        result.generator_cpu = round(cpu / wall, 3)
        result.server_cpu = [
            round((gw.cpu_seconds(g.pid) - s0) / wall, 3)
            for g, s0 in zip(self.gateways, srv0, strict=True)
        ]
        if redis0 is not None:
            result.redis_cpu = round((gw.cpu_seconds(self.redis_pid) - redis0) / wall, 3)
        result.cpu_busy = {k: round(v, 3) for k, v in busy.items()}
        # Whatever else ran on the machine meanwhile (other processes), in cores.
        ours = result.generator_cpu + sum(result.server_cpu) + (result.redis_cpu or 0)
        result.other_cpu = round(max(0.0, sum(busy.values()) - ours), 2)
        result.judge()
        self.log("  " + describe(result))
        await asyncio.sleep(0.3)
        return result

    def _our_cpu(self) -> float:
        ours = time.process_time() + sum(gw.cpu_seconds(g.pid) for g in self.gateways)
        return ours + (gw.cpu_seconds(self.redis_pid) if self.redis_pid else 0.0)

    async def wait_quiet(self) -> tuple[float, float]:
        """Wait (bounded) until other processes leave the cores nearly idle.

        Returns the seconds waited and the cores they used in the last window.
        """
        started = time.monotonic()
        other = 0.0
        while True:
            busy0, ours0, t0 = gw.machine_busy(), self._our_cpu(), time.monotonic()
            await asyncio.sleep(0.5)
            busy = gw.busy_share(busy0, gw.machine_busy())
            ours = (self._our_cpu() - ours0) / (time.monotonic() - t0)
            other = max(0.0, sum(busy.values()) - ours)
            waited = time.monotonic() - started
            if other < self.plan.quiet_cpu or waited >= self.plan.quiet_wait_s:
                return round(waited, 1), round(other, 2)

    async def ladder(self, rates: list, prepare, runner=None, **kwargs) -> list[StepResult]:
        """Steps at rising rates until `stop_after_failures` fail in a row.

        `prepare()` gives each step its `(make, targets)`: the request maker
        and the list it fills with the client each message is meant for.
        """
        run_step = runner or self.run_step
        steps, failures, retries = [], 0, 0
        for rate in rates:
            make, targets = prepare()
            step = await run_step(rate=rate, make=make, targets=targets, **kwargs)
            if (
                not step.passed
                and step.other_cpu > self.plan.noisy_cpu
                and retries < self.plan.max_noisy_retries
            ):
                retries += 1
                # Other processes took CPU meanwhile: try once more before
                # counting the failure, and keep the note.
                self.log(f"  ! {step.other_cpu:.2f} cores used by other processes: re-running")
                make, targets = prepare()
                again = await run_step(rate=rate, make=make, targets=targets, **kwargs)
                again.noisy_retry_of = {
                    "p99_ms": step.p99_ms,
                    "lost": step.lost,
                    "other_cpu": step.other_cpu,
                }
                step = again
            steps.append(step)
            failures = 0 if step.passed else failures + 1
            if failures >= self.plan.stop_after_failures or step.clients_down:
                break
        return steps

    # -- scenario 1: pushes to single users ----------------------------------------------
    async def unicast(self) -> None:
        n = len(self.clients)

        def prepare():
            targets: list[int] = []

            def make(i, scheduled, step):
                u = self.rng.randrange(n)
                targets.append(u)
                body = {"user_id": f"bench-{u}", "data": {"k": step, "s": i, "t": scheduled}}
                return "/api/v1/push", orjson.dumps(body)

            return make, targets

        steps = await self.ladder(
            self.plan.unicast_rates,
            prepare,
            scenario="unicast",
            per_request=1,
            expected_each=1,
            limit_ms=self.plan.unicast_limit_ms,
        )
        self.result["unicast"] = [s.as_dict() for s in steps]

    async def batch(self) -> None:
        n = len(self.clients)
        size = self.plan.batch_size

        def prepare():
            targets: list[int] = []

            def make(i, scheduled, step):
                items = []
                for j in range(size):
                    u = self.rng.randrange(n)
                    targets.append(u)
                    data = {"k": step, "s": i * size + j, "t": scheduled}
                    items.append({"user_id": f"bench-{u}", "data": data})
                return "/api/v1/push/batch", orjson.dumps(items)

            return make, targets

        steps = await self.ladder(
            self.plan.batch_rates,
            prepare,
            scenario="batch",
            per_request=size,
            expected_each=1,
            limit_ms=self.plan.batch_limit_ms,
        )
        self.result["batch"] = [s.as_dict() for s in steps]

    # -- scenario 2: channel fan-out --------------------------------------------------
    async def subscribe_all(self, channel: str) -> float:
        started = time.monotonic()
        waiters = []
        for c in self.clients:
            waiters.append(c.expect("subscribed"))
            c.send_json({"action": "subscribe", "channel": channel})
        await asyncio.wait_for(asyncio.gather(*waiters), 60)
        return time.monotonic() - started

    async def fanout(self) -> None:
        took = await self.subscribe_all("bench")
        n = len(self.clients)
        self.log(f"  {n} clients subscribed to one channel in {took:.2f} s")
        self.result["subscribe_s"] = round(took, 3)

        def make(i, scheduled, step):
            body = {"channel": "bench", "data": {"k": step, "s": i, "t": scheduled}}
            return "/api/v1/push", orjson.dumps(body)

        steps = await self.ladder(
            self.plan.fanout_rates,
            lambda: (make, None),
            scenario="fanout",
            per_request=1,
            expected_each=n,
            limit_ms=self.plan.fanout_limit_ms,
        )
        self.result["fanout"] = [s.as_dict() for s in steps]

    # -- scenario 4: send with reply ------------------------------------------------
    async def reply(self) -> None:
        """`POST /api/v1/send` round trips answered by an echo bot (`ci_bot`).

        The bot is one WebSocket client on the first process; the sends
        alternate between the processes, so on Redis half the replies cross.
        """
        self.bot_sink = EchoBot()
        self.bot = await connect(-1, "ci_bot", HOST, self.gateways[0].port, self.bot_sink)
        self.reply_tag = f"{random.getrandbits(40):010x}"
        try:
            closed = []
            for callers in self.plan.reply_callers:
                closed.append(await self.reply_closed_step(callers))
            self.result["reply_closed"] = closed
            steps = await self.ladder(
                self.plan.reply_rates,
                lambda: (None, None),
                runner=self.reply_open_step,
                scenario="reply",
                per_request=1,
                expected_each=1,
                limit_ms=self.plan.reply_limit_ms,
            )
            self.result["reply"] = [s.as_dict() for s in steps]
        finally:
            self.bot.close()

    def _send_body(self, step: int, i: int) -> bytes:
        return orjson.dumps(
            {
                "user_id": "ci_bot",
                "data": {"n": i},
                "correlation_id": f"bench-{self.reply_tag}-{step}-{i}",
                "timeout": self.plan.reply_timeout_s,
            }
        )

    async def _reply_round(self, size: int, body) -> tuple[dict, dict, list]:
        """Open `size` connections per process, run `body(pools, state)` with CPU
        accounting, close them. Returns (state, cpu, bot error frames)."""
        self.step_id += 1
        step = self.step_id
        state = {"step": step, "lat": [], "ok": 0, "errors": {}, "last": 0.0}

        def on_event(ctx, kind, now):
            ctx_step, sent_at, fut = ctx
            if ctx_step != step:
                return
            if kind == "response":
                state["ok"] += 1
                state["lat"].append(now - sent_at)
                state["last"] = now
            else:
                state["errors"][kind] = state["errors"].get(kind, 0) + 1
            if fut is not None and not fut.done():
                fut.set_result(kind)

        pools = [SSEPool(HOST, g.port, size, on_event) for g in self.gateways]
        for pool in pools:
            await pool.start()
        bot_errors0 = len(self.bot.errors)
        answered0 = self.bot_sink.answered
        quiet_wait, other_before = await self.wait_quiet()
        gc.collect()
        gc.disable()
        cpu0, busy0 = time.process_time(), gw.machine_busy()
        srv0 = [gw.cpu_seconds(g.pid) for g in self.gateways]
        redis0 = gw.cpu_seconds(self.redis_pid) if self.redis_pid else None
        wall0 = time.monotonic()
        try:
            await body(pools, state)
        finally:
            gc.enable()
        wall = time.monotonic() - wall0
        busy = gw.busy_share(busy0, gw.machine_busy())
        cpu = {
            "wall_s": wall,
            "generator_cpu": round((time.process_time() - cpu0) / wall, 3),
            "server_cpu": [
                round((gw.cpu_seconds(g.pid) - s0) / wall, 3)
                for g, s0 in zip(self.gateways, srv0, strict=True)
            ],
            "redis_cpu": (
                round((gw.cpu_seconds(self.redis_pid) - redis0) / wall, 3)
                if redis0 is not None
                else None
            ),
            "cpu_busy": {k: round(v, 3) for k, v in busy.items()},
            "quiet_wait_s": quiet_wait,
            "other_cpu_before": other_before,
            "lag": sorted(x for p in pools for x in p.lag),
        }
        ours = cpu["generator_cpu"] + sum(cpu["server_cpu"]) + (cpu["redis_cpu"] or 0)
        cpu["other_cpu"] = round(max(0.0, sum(busy.values()) - ours), 2)
        state["bot_answered"] = self.bot_sink.answered - answered0
        for pool in pools:
            await pool.close()
        await asyncio.sleep(0.3)
        return state, cpu, self.bot.errors[bot_errors0:]

    async def reply_closed_step(self, callers: int) -> dict:
        """`callers` concurrent callers, each sending the next round trip as soon
        as the last one was answered, for one step's length."""
        plan = self.plan
        n = len(self.gateways)
        counter = [0]

        async def body(pools, state):
            loop = asyncio.get_running_loop()
            stop_at = time.monotonic() + plan.step_seconds

            async def caller(c):
                k = 0
                while time.monotonic() < stop_at:
                    i = counter[0]
                    counter[0] += 1
                    fut = loop.create_future()
                    now = time.monotonic()
                    pools[(c + k) % n].submit(
                        "/api/v1/send",
                        self._send_body(state["step"], i),
                        (state["step"], now, fut),
                        now,
                    )
                    k += 1
                    try:
                        await asyncio.wait_for(fut, plan.reply_timeout_s + 5)
                    except TimeoutError:
                        state["errors"]["no answer"] = state["errors"].get("no answer", 0) + 1
                        return

            await asyncio.gather(*(caller(c) for c in range(callers)))

        state, cpu, bot_errors = await self._reply_round(callers, body)
        lat = sorted(state["lat"])
        sent = counter[0]
        out = {
            "callers": callers,
            "round_trips": state["ok"],
            "sent": sent,
            "lost": sent - state["ok"],
            "errors": state["errors"],
            "bot_errors": len(bot_errors),
            "bot_error_sample": bot_errors[:3],
            "bot_answered": state["bot_answered"],
            "round_trips_per_s": round(state["ok"] / cpu["wall_s"], 1),
            "p50_ms": ms(percentile(lat, 50)),
            "p90_ms": ms(percentile(lat, 90)),
            "p99_ms": ms(percentile(lat, 99)),
            "max_ms": ms(lat[-1] if lat else None),
            **{k: v for k, v in cpu.items() if k not in ("lag", "wall_s")},
            "duration_s": round(cpu["wall_s"], 2),
        }
        server = "+".join(f"{c:.0%}" for c in out["server_cpu"])
        self.log(
            f"  reply closed loop {callers:>4} callers: {out['round_trips_per_s']:>7.1f} "
            f"round trips/s lost {out['lost']} p50 {out['p50_ms']} p99 {out['p99_ms']} "
            f"max {out['max_ms']} ms | gen cpu {out['generator_cpu']:.0%} | server cpu "
            f"{server} other {out['other_cpu']:.2f}"
            + (f" | errors {out['errors']}" if out["errors"] else "")
            + (f" | bot got {len(bot_errors)} error frames" if bot_errors else "")
        )
        return out

    async def reply_open_step(self, *, rate: float, limit_ms: float, **_) -> StepResult:
        """Open loop: round trip i is sent at t0 + i/rate; latency from then."""
        plan = self.plan
        total = max(1, int(rate * plan.step_seconds))
        n = len(self.gateways)
        result = StepResult(
            scenario="reply",
            rate=rate,
            offered_deliveries_per_s=rate,
            duration_s=plan.step_seconds,
            limit_ms=limit_ms,
        )
        sent = [0]
        closed_before = 1 if self.bot_sink.closed else 0
        start_at = [0.0]

        async def body(pools, state):
            loop = asyncio.get_running_loop()
            start = time.monotonic() + 0.01
            start_at[0] = start
            i = 0
            while i < total:
                now = time.monotonic()
                due = min(total, int((now - start) * rate) + 1)
                while i < due:
                    scheduled = start + i / rate
                    pools[i % n].submit(
                        "/api/v1/send",
                        self._send_body(state["step"], i),
                        (state["step"], scheduled, None),
                        scheduled,
                    )
                    i += 1
                oldest = min(
                    (p.oldest_pending() for p in pools if p.oldest_pending()), default=None
                )
                if oldest is not None and now - oldest > plan.abort_lag_s:
                    result.aborted = True
                    for pool in pools:
                        dropped = len(pool.drop_pending())
                        state["errors"]["not sent"] = state["errors"].get("not sent", 0) + dropped
                    break
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            sent[0] = i
            deadline = time.monotonic() + plan.reply_timeout_s + 5
            while sum(p.outstanding for p in pools) and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            del loop

        state, cpu, bot_errors = await self._reply_round(plan.reply_pool_size, body)
        errors = dict(state["errors"])
        answered = state["ok"] + sum(errors.values())
        if answered < sent[0]:
            errors["no answer"] = errors.get("no answer", 0) + sent[0] - answered
        # Requests dropped unsent when the step fell behind are not lost: the
        # step fails as "fell behind" (as in the other ladders).
        written = sent[0] - errors.pop("not sent", 0)
        result.requests_sent = written
        result.requests_accepted = state["ok"]
        result.request_errors = errors
        result.expected = written
        result.received = state["ok"]
        result.promised = state["bot_answered"]
        result.lost = written - state["ok"]
        if bot_errors:
            result.error_samples = [str(e)[:300] for e in bot_errors[:3]]
            result.request_errors["bot error frames"] = len(bot_errors)
        result.clients_closed = (1 if self.bot_sink.closed else 0) - closed_before
        result.clients_down = sum(1 for c in self.clients if c.closed.done()) + (
            1 if self.bot_sink.closed else 0
        )
        lat = sorted(state["lat"])
        result.p50_ms = ms(percentile(lat, 50))
        result.p90_ms = ms(percentile(lat, 90))
        result.p99_ms = ms(percentile(lat, 99))
        result.max_ms = ms(lat[-1] if lat else None)
        span = max(total / rate, state["last"] - start_at[0])
        result.achieved_deliveries_per_s = round(state["ok"] / span, 1)
        result.generator_lag_p99_ms = ms(percentile(cpu["lag"], 99))
        result.generator_cpu = cpu["generator_cpu"]
        result.server_cpu = cpu["server_cpu"]
        result.redis_cpu = cpu["redis_cpu"]
        result.cpu_busy = cpu["cpu_busy"]
        result.other_cpu = cpu["other_cpu"]
        result.quiet_wait_s = cpu["quiet_wait_s"]
        result.other_cpu_before = cpu["other_cpu_before"]
        result.judge()
        self.log("  " + describe(result))
        return result


def describe(s: StepResult) -> str:
    verdict = "ok  " if s.passed else "FAIL"
    extra = []
    if s.aborted:
        extra.append("aborted: gateway fell behind")
    if s.request_errors:
        extra.append(f"errors {s.request_errors}")
    if s.clients_closed:
        extra.append(f"{s.clients_closed} clients closed")
    if s.clients_down:
        extra.append(f"{s.clients_down} clients down")
    if s.duplicates:
        extra.append(f"{s.duplicates} duplicates")
    if s.misrouted:
        extra.append(f"{s.misrouted} misrouted")
    if s.id_errors:
        extra.append(f"{s.id_errors} id errors")
    cpu = "+".join(f"{c:.0%}" for c in s.server_cpu)
    redis = f" redis {s.redis_cpu:.0%}" if s.redis_cpu is not None else ""
    return (
        f"{verdict} {s.scenario:10} {s.rate:>6g}/s -> {s.offered_deliveries_per_s:>7.0f} deliv/s "
        f"got {s.achieved_deliveries_per_s:>8.0f}/s lost {s.lost:<5} "
        f"p50 {s.p50_ms} p99 {s.p99_ms} max {s.max_ms} ms | "
        f"gen cpu {s.generator_cpu:.0%} lag99 {s.generator_lag_p99_ms} ms | "
        f"server cpu {cpu}{redis} other {s.other_cpu:.2f}"
        + (" | " + "; ".join(extra) if extra else "")
    )
