"""The channel scenarios of issue 5: presence (a crowd in one channel) and
registry (what a connect and a disconnect cost).

presence: `presence_members` WebSocket clients (`member-<i>`, alternating
between the processes on Redis) subscribe to one channel at once; with
PRESENCE_MAX_MEMBERS (100) only the first joins send `presence` `join` events
to the members already there, about 100 x 100 / 2 frames in all. Then
`presence` queries (closed loop, one at a time, from 20 members in turn),
each answer checked to list every member; then `publish` frames from one
member over its WebSocket at rising rates (the open-loop step of
`Session.run_step`, with the member's socket standing in for the HTTP pool:
each frame carries a `request_id` and its `ack` is the receipt); then
`typing` frames from that member at a fixed rate, which must reach every
other member and not the sender.

registry: `registry_connections` WebSockets opened as fast as the gateway
accepts them (100 handshakes in flight), each subscribing to a channel of its
own; the time until `GET /api/v1/stats` counts them all; then all close at
once, and the time until it counts none; gateway CPU per connect and per
disconnect.

`ChannelScenarios` is mixed into `bench.scenarios.Session`.
"""

import asyncio
import gc
import time
import urllib.request

import orjson

from . import gateway as gw
from .stats import StepResult, ms, percentile
from .wsclient import RETRIES, Sink, WSClient, connect, connect_many

HOST = "127.0.0.1"
PRESENCE_MAX_MEMBERS = 100  # the gateway's default (realtime/settings.py)


class FramePool:
    """Requests sent as frames of one WebSocket client, answered by the `ack`
    (or `error`) frame that carries their `request_id`: what `Session.run_step`
    needs of an HTTP pool. "Pending" is sent and not yet acknowledged."""

    size = 0

    def __init__(self, client: WSClient, on_response) -> None:
        self.client = client
        self.on_response = on_response
        self.lag: list[float] = []
        self.pending: dict[int, tuple] = {}  # request_id -> (ctx, scheduled)
        self.next_id = 0
        client.closed.add_done_callback(self._closed)

    @property
    def outstanding(self) -> int:
        return len(self.pending)

    def oldest_pending(self) -> float | None:
        return min((s for _, s in self.pending.values()), default=None)

    def submit(self, path: str, body: dict, ctx, scheduled: float) -> None:
        rid = self.next_id
        self.next_id += 1
        self.pending[rid] = (ctx, scheduled)
        self.client.send_json({**body, "request_id": rid})
        self.lag.append(time.monotonic() - scheduled)

    def on_frame(self, frame: dict, now: float) -> None:
        entry = self.pending.pop(frame.get("request_id"), None)
        if entry is None:
            return
        if frame.get("type") == "ack":
            self.on_response(entry[0], 202, orjson.dumps(frame), now)
        else:
            self.on_response(entry[0], frame.get("code", "error"), orjson.dumps(frame), now)

    def drop_pending(self) -> list:
        return []  # already written: their acks still come

    def _closed(self, _fut) -> None:
        now = time.monotonic()
        for ctx, _ in self.pending.values():
            self.on_response(ctx, "closed", b"the publisher's connection closed", now)
        self.pending.clear()


class ChannelWatch:
    """What the members hear besides messages: presence events, presence
    answers, typing frames, and the publisher's acks."""

    def __init__(self, n: int) -> None:
        self.presence = [0] * n  # join/leave events per member
        self.events: dict[str, int] = {}
        self.joined: set = set()  # users whose `join` event someone heard
        self.presence_last = 0.0
        self.typing: list[list] = [[] for _ in range(n)]  # (now, is_typing, user)
        self.typing_last = 0.0
        self.answers: dict = {}  # request_id -> future of (frame, now)
        self.pool: FramePool | None = None
        self.errors: list[dict] = []

    def hook(self, client: WSClient, frame: dict, now: float) -> None:
        kind = frame.get("type")
        if kind == "presence":
            if frame.get("event") == "state":
                fut = self.answers.pop(frame.get("request_id"), None)
                if fut is not None and not fut.done():
                    fut.set_result((frame, now))
                return
            self.presence[client.index] += 1
            event = str(frame.get("event"))
            self.events[event] = self.events.get(event, 0) + 1
            if event == "join":
                self.joined.add(frame.get("user"))
            self.presence_last = now
        elif kind == "typing":
            self.typing[client.index].append((now, frame.get("is_typing"), frame.get("user")))
            self.typing_last = now
        elif kind in ("ack", "error"):
            pool, rid = self.pool, frame.get("request_id")
            if pool is not None and client is pool.client and rid in pool.pending:
                pool.on_frame(frame, now)
                return
            fut = self.answers.pop(rid, None)
            if fut is not None and not fut.done():
                fut.set_result((frame, now))
            elif kind == "error" and len(self.errors) < 20:
                self.errors.append(frame)


def fetch_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{port}/api/v1/stats", timeout=5) as r:
        return orjson.loads(r.read())


class ChannelScenarios:
    """presence and registry, for `bench.scenarios.Session`."""

    def meter(self):
        """Start measuring CPU; the returned function gives the shares since."""
        cpu0, busy0 = time.process_time(), gw.machine_busy()
        srv0 = [gw.cpu_seconds(g.pid) for g in self.gateways]
        redis0 = gw.cpu_seconds(self.redis_pid) if self.redis_pid else None
        wall0 = time.monotonic()

        def read() -> dict:
            wall = max(1e-6, time.monotonic() - wall0)
            busy = gw.busy_share(busy0, gw.machine_busy())
            server_s = [
                gw.cpu_seconds(g.pid) - s0 for g, s0 in zip(self.gateways, srv0, strict=True)
            ]
            out = {
                "wall_s": wall,
                "generator_cpu": round((time.process_time() - cpu0) / wall, 3),
                "server_cpu": [round(s / wall, 3) for s in server_s],
                "server_cpu_s": round(sum(server_s), 3),
                "redis_cpu": (
                    round((gw.cpu_seconds(self.redis_pid) - redis0) / wall, 3)
                    if redis0 is not None
                    else None
                ),
                "cpu_busy": {k: round(v, 3) for k, v in busy.items()},
            }
            ours = out["generator_cpu"] + sum(out["server_cpu"]) + (out["redis_cpu"] or 0)
            out["other_cpu"] = round(max(0.0, sum(busy.values()) - ours), 2)
            return out

        return read

    # -- presence -------------------------------------------------------------------
    async def presence(self) -> None:
        plan = self.plan
        channel = plan.presence_channel
        n = plan.presence_members
        watch = ChannelWatch(n)
        self.clients, took = await connect_many(
            self.specs(0, n, "member"), self.recorder, spread_s=plan.spread_s
        )
        for c in self.clients:
            c.frame_hook = watch.hook
        await self._settle(n)
        self.log(f"  {n} members connected over {took:.1f} s")
        out: dict = {"members": n, "channel": channel, "connect_s": round(took, 2)}
        out["join"] = await self._join(channel, watch)
        out["query"] = await self._queries(channel, watch)
        self.result["presence"] = out
        pool = FramePool(self.clients[0], self._on_response)
        watch.pool = pool
        saved = self.pools
        self.pools = [pool]

        def make(i, scheduled, step):
            data = {"k": step, "s": i, "t": scheduled}
            return "publish", {"action": "publish", "channel": channel, "data": data}

        try:
            steps = await self.ladder(
                plan.publish_rates,
                lambda: (make, None),
                scenario="publish",
                per_request=1,
                expected_each=n,
                limit_ms=plan.fanout_limit_ms,
            )
        finally:
            self.pools = saved
            watch.pool = None
        self.result["publish"] = [s.as_dict() for s in steps]
        typing = await self._typing_step(channel, watch, plan.typing_rate)
        self.result["typing"] = [typing.as_dict()]
        out["errors"] = watch.errors[:5]
        out["presence_events_after_join"] = sum(watch.presence) - out["join"]["presence_frames"]

    async def _join(self, channel: str, watch: ChannelWatch) -> dict:
        """Every member subscribes at once; the presence events that follows."""
        n = len(self.clients)
        quiet_wait, other_before = await self.wait_quiet()
        read = self.meter()
        t0 = time.monotonic()
        waiters = []
        for c in self.clients:
            waiters.append(c.expect("subscribed"))
            c.send_json({"action": "subscribe", "channel": channel})
        await asyncio.wait_for(asyncio.gather(*waiters), 120)
        subscribed_s = time.monotonic() - t0
        # The last presence events: until a second passes without one.
        while time.monotonic() - max(watch.presence_last, t0 + subscribed_s) < 1.0:
            await asyncio.sleep(0.05)
        cpu = read()
        last = max(watch.presence_last, t0 + subscribed_s) - t0
        m = min(n, PRESENCE_MAX_MEMBERS)
        frames = sum(watch.presence)
        per = watch.presence
        out = {
            "subscribed_s": round(subscribed_s, 3),
            "last_event_s": round(last, 3),
            "joins_per_s": round(n / subscribed_s, 1),
            "presence_frames": frames,
            "join_events": len(watch.joined),  # distinct joins announced
            "expected_about": m * (m - 1) // 2,
            "events": dict(watch.events),
            "max_per_member": max(per),
            "members_with_events": sum(1 for x in per if x),
            "server_cpu_ms": round(cpu["server_cpu_s"] * 1000),
            "server_cpu_ms_per_join": round(cpu["server_cpu_s"] * 1000 / n, 2),
            "other_cpu": cpu["other_cpu"],
            "other_cpu_before": other_before,
            "quiet_wait_s": quiet_wait,
        }
        self.log(
            f"  {n} members joined {channel!r} in {subscribed_s:.2f} s ({n / subscribed_s:.0f}/s), "
            f"last presence event at {last:.2f} s: {frames} presence frames (about "
            f"{out['expected_about']} expected), announcing {len(watch.joined)} joins; "
            f"at most {out['max_per_member']} per member, "
            f"{out['members_with_events']} members got any); gateway CPU "
            f"{out['server_cpu_ms']} ms, other {cpu['other_cpu']:.2f}"
        )
        return out

    async def _queries(self, channel: str, watch: ChannelWatch) -> dict:
        """`presence` queries one at a time from 20 members in turn (under the
        per-connection frame rate limit); every answer must list every member."""
        plan = self.plan
        n = len(self.clients)
        expected = {c.user for c in self.clients}
        askers = self.clients[: min(20, n)]
        loop = asyncio.get_running_loop()
        quiet_wait, other_before = await self.wait_quiet()
        read = self.meter()
        lat, bad, size, problems = [], 0, 0, []
        for q in range(plan.presence_queries):
            fut = loop.create_future()
            rid = f"q{q}"
            watch.answers[rid] = fut
            sent = time.monotonic()
            askers[q % len(askers)].send_json(
                {"action": "presence", "channel": channel, "request_id": rid}
            )
            try:
                frame, now = await asyncio.wait_for(fut, 10)
            except TimeoutError:
                bad += 1
                problems.append("no answer in 10 s")
                continue
            lat.append(now - sent)
            users = frame.get("users")
            if not size:
                size = len(orjson.dumps(frame))
            if frame.get("type") != "presence" or not isinstance(users, list):
                bad += 1
                problems.append(str(frame)[:200])
            elif len(users) != n or set(users) != expected:
                bad += 1
                problems.append(f"{len(users)} users listed, {len(set(users) & expected)} right")
        cpu = read()
        lat.sort()
        out = {
            "queries": plan.presence_queries,
            "answered": len(lat),
            "wrong": bad,
            "problems": problems[:3],
            "answer_bytes": size,
            "p50_ms": ms(percentile(lat, 50)),
            "p90_ms": ms(percentile(lat, 90)),
            "p99_ms": ms(percentile(lat, 99)),
            "max_ms": ms(lat[-1] if lat else None),
            "per_s": round(len(lat) / cpu["wall_s"], 1),
            "server_cpu_ms_per_query": round(cpu["server_cpu_s"] * 1000 / max(1, len(lat)), 2),
            "server_cpu": cpu["server_cpu"],
            "other_cpu": cpu["other_cpu"],
            "other_cpu_before": other_before,
            "quiet_wait_s": quiet_wait,
        }
        self.log(
            f"  {len(lat)} presence queries ({size} bytes each answer, {bad} wrong): "
            f"p50 {out['p50_ms']} p99 {out['p99_ms']} max {out['max_ms']} ms, "
            f"{out['server_cpu_ms_per_query']} ms gateway CPU each, other {cpu['other_cpu']:.2f}"
        )
        return out

    async def _typing_step(self, channel: str, watch: ChannelWatch, rate: float) -> StepResult:
        """`typing` frames from the first member at `rate` for one step (open
        loop, `is_typing` alternating); each must reach every other member,
        once, in order, and not the sender. A typing frame carries no payload:
        the k-th one a member hears is the k-th sent (one sender, in order)."""
        from .scenarios import describe

        plan = self.plan
        n = len(self.clients)
        sender = self.clients[0]
        total = max(1, int(rate * plan.step_seconds))
        for heard in watch.typing:
            heard.clear()
        result = StepResult(
            scenario="typing",
            rate=rate,
            offered_deliveries_per_s=rate * (n - 1),
            duration_s=plan.step_seconds,
            limit_ms=plan.fanout_limit_ms,
        )
        result.quiet_wait_s, result.other_cpu_before = await self.wait_quiet()
        gc.collect()
        gc.disable()
        read = self.meter()
        scheduled, lags = [], []
        start = time.monotonic() + 0.01
        try:
            for i in range(total):
                at = start + i / rate
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                sender.send_json({"action": "typing", "channel": channel, "is_typing": i % 2 == 0})
                lags.append(time.monotonic() - at)
                scheduled.append(at)
            expected = total * (n - 1)
            watch.typing_last = time.monotonic()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                got = sum(len(h) for h in watch.typing[1:])
                if got >= expected or time.monotonic() - watch.typing_last > plan.drain_s:
                    break
                await asyncio.sleep(0.01)
        finally:
            gc.enable()
        cpu = read()
        lat, lost, dup, wrong = [], 0, 0, 0
        for heard in watch.typing[1:]:
            lost += max(0, total - len(heard))
            dup += max(0, len(heard) - total)
            for k, (now, is_typing, user) in enumerate(heard[:total]):
                lat.append(now - scheduled[k])
                if is_typing != (k % 2 == 0) or user != sender.user:
                    wrong += 1
        result.requests_sent = result.requests_accepted = total
        result.expected = expected
        result.received = sum(len(h) for h in watch.typing[1:])
        result.lost = lost
        result.duplicates = dup
        result.misrouted = len(watch.typing[0])  # the sender must hear none of its own
        result.id_errors = wrong  # out of order, or from someone else
        result.clients_down = sum(1 for c in self.clients if c.closed.done())
        lat.sort()
        result.p50_ms = ms(percentile(lat, 50))
        result.p90_ms = ms(percentile(lat, 90))
        result.p99_ms = ms(percentile(lat, 99))
        result.max_ms = ms(lat[-1] if lat else None)
        last = max((h[-1][0] for h in watch.typing[1:] if h), default=start)
        span = max(total / rate, last - start)
        result.achieved_deliveries_per_s = round(result.received / span, 1)
        lags.sort()
        result.generator_lag_p99_ms = ms(percentile(lags, 99))
        result.generator_cpu = cpu["generator_cpu"]
        result.server_cpu = cpu["server_cpu"]
        result.redis_cpu = cpu["redis_cpu"]
        result.cpu_busy = cpu["cpu_busy"]
        result.other_cpu = cpu["other_cpu"]
        result.judge()
        self.log(
            "  "
            + describe(result)
            + f" | sender heard {result.misrouted} of its own, {wrong} out of order"
        )
        return result

    # -- registry -------------------------------------------------------------------
    def stats_each(self) -> list[dict]:
        return [fetch_stats(g.port) for g in self.gateways]

    async def _watch_stats(self, want: int, timeout: float = 120) -> dict:
        """Poll `/api/v1/stats` (of every process) until each says `want`
        WebSockets; returns when, the slowest answer, and the last answer."""
        started = time.monotonic()
        slowest, errors, seen = 0.0, 0, None
        while time.monotonic() - started < timeout:
            asked = time.monotonic()
            try:
                answers = await asyncio.to_thread(self.stats_each)
            except OSError:
                errors += 1
                answers = None
            slowest = max(slowest, time.monotonic() - asked)
            if answers:
                seen = answers[0]
                if all(a["websocket"]["total"] == want for a in answers):
                    return {
                        "after_s": round(time.monotonic() - started, 3),
                        "slowest_answer_s": round(slowest, 3),
                        "errors": errors,
                        "stats": seen,
                    }
            await asyncio.sleep(0.1)
        self.log(f"  ! after {timeout:.0f} s /api/v1/stats says {seen}, not {want} WebSockets")
        return {
            "after_s": None,
            "slowest_answer_s": round(slowest, 3),
            "errors": errors,
            "stats": seen,
        }

    async def registry(self) -> None:
        plan = self.plan
        n = plan.registry_connections
        await self.warm_up()
        await self._idle_cpu()
        sink = Sink()
        sem = asyncio.Semaphore(100)
        specs = self.specs(0, n, "reg")

        async def one(spec) -> WSClient:
            async with sem:
                for attempt in range(3):
                    try:
                        client = await asyncio.wait_for(connect(*spec, sink), 30)
                        break
                    except (OSError, ConnectionError, TimeoutError) as exc:
                        if attempt == 2:
                            raise
                        RETRIES["count"] += 1
                        RETRIES["last_error"] = repr(exc)[:200]
                        await asyncio.sleep(0.2)
                waiter = client.expect("subscribed")
                client.send_json({"action": "subscribe", "channel": f"reg-{spec[0]}"})
                await asyncio.wait_for(waiter, 30)
                return client

        rss0 = self.rss()
        quiet_wait, other_before = await self.wait_quiet()
        read = self.meter()
        t0 = time.monotonic()
        stats_task = asyncio.ensure_future(self._watch_stats(n))
        clients = await asyncio.gather(*(one(spec) for spec in specs))
        opened_s = time.monotonic() - t0
        shown = await stats_task
        shown_s = round(time.monotonic() - t0, 3) if shown["after_s"] is not None else None
        cpu_open = read()
        rss1 = self.rss()
        stats = shown["stats"] or {}
        opened = {
            "connections": n,
            "opened_s": round(opened_s, 3),
            "per_s": round(n / opened_s, 1),
            "stats_all_s": shown_s,
            "stats_slowest_answer_s": shown["slowest_answer_s"],
            "stats_errors": shown["errors"],
            "subscriptions_counted": stats.get("channels", {}).get("subscriptions"),
            "server_cpu_ms_per_connect": round(cpu_open["server_cpu_s"] * 1000 / n, 2),
            "server_cpu": cpu_open["server_cpu"],
            "generator_cpu": cpu_open["generator_cpu"],
            "redis_cpu": cpu_open["redis_cpu"],
            "kib_per_connection": round((rss1 - rss0) / n, 1),
            "other_cpu": cpu_open["other_cpu"],
            "other_cpu_before": other_before,
            "quiet_wait_s": quiet_wait,
        }
        self.log(
            f"  {n} WebSockets opened and subscribed in {opened_s:.2f} s ({n / opened_s:.0f}/s); "
            f"/api/v1/stats counted them all after {shown_s} s (slowest answer "
            f"{shown['slowest_answer_s']} s); gateway CPU "
            f"{opened['server_cpu_ms_per_connect']} ms per connect, other "
            f"{cpu_open['other_cpu']:.2f}"
        )
        self.note_redis(f"with {n} registry clients")
        await self._idle_cpu()
        quiet_wait, other_before = await self.wait_quiet()
        read = self.meter()
        t1 = time.monotonic()
        for c in clients:
            c.close()
        gone = await self._watch_stats(0)
        gone_s = round(time.monotonic() - t1, 3) if gone["after_s"] is not None else None
        settled = await self._settle(0, key="websocket")
        await self._idle_cpu()
        cpu_close = read()
        closed = {
            "stats_none_s": gone_s,
            "stats_slowest_answer_s": gone["slowest_answer_s"],
            "stats_errors": gone["errors"],
            "health_counted": settled["counted"],
            "server_cpu_ms_per_disconnect": round(cpu_close["server_cpu_s"] * 1000 / n, 2),
            "redis_cpu": cpu_close["redis_cpu"],
            "other_cpu": cpu_close["other_cpu"],
            "other_cpu_before": other_before,
            "quiet_wait_s": quiet_wait,
        }
        self.log(
            f"  closed them at once: /api/v1/stats counted none after {gone_s} s (slowest "
            f"answer {gone['slowest_answer_s']} s); gateway CPU "
            f"{closed['server_cpu_ms_per_disconnect']} ms per disconnect, other "
            f"{cpu_close['other_cpu']:.2f}"
        )
        self.note_redis("after the registry clients left")
        self.result["registry"] = {"open": opened, "close": closed}
