"""The Server-Sent Events scenarios: idle streams, channel fan-out, replay.

`GET /events/?user_id=<u>&channel=<c>` holds a stream (bridge/sse.py): a
`retry:` hint, a `welcome` event with an `id:`, then each message as
`id: <compound position>` / `event: <event_type>` / `data: <envelope>`, and a
`: keep-alive` comment every SSE_HEARTBEAT_INTERVAL seconds. A reconnect with
`Last-Event-ID: <the last id seen>` replays what was missed, then goes live.

The streams are `bench.sseclient.EventStream`s (one raw asyncio protocol
each). `SSEScenarios` is mixed into `bench.scenarios.Session`, whose gateway
processes, HTTP pools, open-loop step and ladder it reuses.
"""

import asyncio
import gc
import random
import statistics
import time
from urllib.parse import quote

import orjson

from . import gateway as gw
from .sseclient import EventStream, StreamSink, open_many, open_stream

HOST = "127.0.0.1"


def parse_key(message_id: str) -> tuple[int, int]:
    """A message id `<ms>-<seq>` as a comparable key."""
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq)


class StreamRecorder(StreamSink):
    """Counts and times the messages of the current fan-out step, per stream,
    and checks their ids: the same id on every stream for a message (the one
    its receipt gave), rising on each stream, and named in the stream's
    `id:` line (the position a browser would resume from)."""

    def __init__(self, channel: str) -> None:
        self.piece = f"{quote('c:' + channel, safe='')}:".encode()
        self.streams: list[EventStream] = []
        self.closed: list[EventStream] = []
        self.step = -1
        self.reset(-1, 0, None)

    def reset(self, step: int, size: int, targets) -> None:
        self.step = step
        self.counts = [0] * size
        self.ids: list[str | None] = [None] * size
        self.latencies: list[float] = []
        self.received = 0
        self.stale = 0
        self.misrouted = 0  # events of another name than the message's event_type
        self.id_errors = 0
        self.last_heard = time.monotonic()
        for stream in self.streams:
            stream.seen = bytearray(size)

    def on_event(self, stream: EventStream, name: bytes, payload: bytes, now: float) -> None:
        envelope = orjson.loads(payload)
        data = envelope.get("data")
        if not isinstance(data, dict) or data.get("k") != self.step:
            self.stale += 1
            return
        seq = data["s"]
        self.counts[seq] += 1
        seen = stream.seen
        if seen[seq] < 255:
            seen[seq] += 1
        self.latencies.append(now - data["t"])
        self.received += 1
        self.last_heard = now
        if name != b"message":
            self.misrouted += 1
        message_id = envelope["id"]
        known = self.ids[seq]
        if known is None:
            self.ids[seq] = message_id
        elif known != message_id:
            self.id_errors += 1
        key = parse_key(message_id)
        if key <= stream.last_key:
            self.id_errors += 1  # out of order, or repeated
        stream.last_key = key
        if self.piece + message_id.encode() not in stream.last_id.split(b","):
            self.id_errors += 1  # the resume position does not name this message

    def on_closed(self, stream: EventStream) -> None:
        self.closed.append(stream)

    def tally(self, accepted: bytearray, each: int, receipt_ids: list) -> tuple[int, int, int]:
        """(lost, duplicates, id errors) over every stream and accepted message."""
        lost = dup = 0
        if accepted.count(0) == 0:
            for stream in self.streams:
                seen = stream.seen
                missing = seen.count(0)
                lost += missing
                dup += sum(seen) - (len(seen) - missing)
        else:
            wanted = [i for i, a in enumerate(accepted) if a]
            for stream in self.streams:
                seen = stream.seen
                for i in wanted:
                    n = seen[i]
                    if n == 0:
                        lost += 1
                    elif n > 1:
                        dup += n - 1
        # Streams that never existed (fewer than `each`) lose everything.
        lost += max(0, each - len(self.streams)) * sum(accepted)
        wrong = sum(
            1
            for got, receipt in zip(self.ids, receipt_ids, strict=False)
            if got is not None and receipt is not None and got != receipt
        )
        return lost, dup, self.id_errors + wrong


class ReplaySink(StreamSink):
    """The events of one reconnected stream, until `count` have come."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.events: list[tuple[bytes, bytes, dict]] = []  # (name, id line, envelope)
        self.done = asyncio.get_running_loop().create_future()
        self.at: list[float] = []
        self.closed = False

    def on_event(self, stream: EventStream, name: bytes, payload: bytes, now: float) -> None:
        self.events.append((name, stream.last_id, orjson.loads(payload)))
        self.at.append(now)
        if len(self.events) >= self.count and not self.done.done():
            self.done.set_result(now)

    def on_closed(self, stream: EventStream) -> None:
        self.closed = True
        if not self.done.done():
            self.done.set_exception(ConnectionError("the stream closed during the replay"))


class SSEScenarios:
    """The SSE scenarios, for `bench.scenarios.Session`."""

    def sse_specs(
        self, first: int, last: int, name: str, channel: str | None = None
    ) -> list[tuple]:
        """Streams first..last-1 (user `<name>-<i>`), alternating between the processes."""
        extra = f"&channel={quote(channel)}" if channel else ""
        return [
            (
                i,
                f"/events/?user_id={name}-{i}{extra}",
                HOST,
                self.gateways[i % len(self.gateways)].port,
            )
            for i in range(first, last)
        ]

    def cpu_mark(self) -> tuple:
        return gw.machine_busy(), self._our_cpu(), time.monotonic()

    def other_cpu(self, mark: tuple) -> float:
        """Cores used by other processes on the machine since `mark`."""
        busy0, ours0, t0 = mark
        wall = max(1e-6, time.monotonic() - t0)
        busy = gw.busy_share(busy0, gw.machine_busy())
        return round(max(0.0, sum(busy.values()) - (self._our_cpu() - ours0) / wall), 2)

    def sse_count(self) -> int:
        return sum(self.health_each("sse"))

    async def _push_all(self, bodies: list[bytes], timeout: float = 120) -> list[tuple]:
        """POST /api/v1/push each body (spread over the pools), as fast as the
        pools go; returns (status, receipt) per body, in order."""
        answers: list = [None] * len(bodies)
        done = asyncio.get_running_loop().create_future()
        left = [len(bodies)]

        def answered(ctx, status, body, now):
            answers[ctx] = (status, orjson.loads(body) if status == 202 else body[:300])
            left[0] -= 1
            if left[0] == 0 and not done.done():
                done.set_result(None)

        saved = [pool.on_response for pool in self.pools]
        for pool in self.pools:
            pool.on_response = answered
        try:
            for i, body in enumerate(bodies):
                self.pools[i % len(self.pools)].submit("/api/v1/push", body, i, time.monotonic())
            await asyncio.wait_for(done, timeout)
        finally:
            for pool, on_response in zip(self.pools, saved, strict=True):
                pool.on_response = on_response
                pool.lag.clear()
        return answers

    async def sse_warm_up(self) -> None:
        """Open a few streams, push to them (user and channel), close them:
        the lazy imports and first-use costs are not counted as memory."""
        sink = ReplaySink(2 * 10 * len(self.gateways))
        streams, _ = await open_many(
            self.sse_specs(0, 10 * len(self.gateways), "sse-warm", channel="warm"), sink
        )
        bodies = [
            orjson.dumps({"user_id": f"sse-warm-{s.index}", "data": {"w": 1}}) for s in streams
        ]
        bodies += [orjson.dumps({"channel": "warm", "data": {"w": 2}})]
        await self._push_all(bodies)
        await asyncio.wait_for(sink.done, 30)
        for s in streams:
            s.close()
        await self._settle(0, key="sse")

    # -- sse-idle: memory per stream, and streams opened per second ---------------
    async def sse_idle(self) -> None:
        plan = self.plan
        idle: dict = {"rss_start_kib": self.rss()}
        await self.sse_warm_up()
        gc.collect()
        base = self.rss()
        idle["rss_baseline_kib"] = base
        idle["points"] = []
        sink = StreamSink()
        streams: list[EventStream] = []
        for target in sorted({min(plan.clients, plan.sse_streams), plan.sse_streams}):
            added = target - len(streams)
            mark = self.cpu_mark()
            more, took = await open_many(self.sse_specs(len(streams), target, "sse-idle"), sink)
            streams += more
            settled = await self._settle(target, key="sse")
            rss = self.rss()
            idle["points"].append(
                {
                    "streams": target,
                    "connect_s": round(took, 3),
                    "streams_per_s": round(added / took, 1),
                    "rss_kib": rss,
                    "kib_per_stream": round((rss - base) / target, 2),
                    "counted": settled["counted"],
                    "other_cpu": self.other_cpu(mark),
                }
            )
            self.note_redis(f"with {target} idle SSE streams")
            self.log(
                f"  {target} idle SSE streams (+{added} in {took:.2f} s, {added / took:.0f}/s): "
                f"RSS {base / 1024:.1f} -> {rss / 1024:.1f} MiB "
                f"({(rss - base) / target:.1f} KiB/stream)"
            )
        # Hold them past a keep-alive tick: every stream must stay open and hear it.
        comments0 = [s.comments for s in streams]
        mark = self.cpu_mark()
        cpu0 = [gw.cpu_seconds(g.pid) for g in self.gateways]
        t0 = time.monotonic()
        await asyncio.sleep(plan.sse_hold_s)
        held_s = time.monotonic() - t0
        cpu = [
            round((gw.cpu_seconds(g.pid) - c) / held_s, 3)
            for g, c in zip(self.gateways, cpu0, strict=True)
        ]
        held = sum(1 for s in streams if not s.closed.done())
        counted = self.sse_count()
        keep_alives = sum(s.comments for s in streams) - sum(comments0)
        heard_at = [s.comment_at for s, c in zip(streams, comments0, strict=True) if s.comments > c]
        heard = len(heard_at)
        # One timer writes every stream's keep-alive: how long the last tick
        # took to reach them all (the gateway does nothing else meanwhile).
        tick_ms = round((max(heard_at) - min(heard_at)) * 1000, 1) if heard_at else None
        idle["hold"] = {
            "seconds": round(held_s, 1),
            "streams": len(streams),
            "held": held,
            "counted": counted,
            "keep_alives": keep_alives,
            "heard_keep_alive": heard,
            "keep_alive_spread_ms": tick_ms,
            "server_cpu": cpu,
            "other_cpu": self.other_cpu(mark),
        }
        self.log(
            f"  held {held} of {len(streams)} streams for {held_s:.1f} s (gateway counts "
            f"{counted}; {heard} heard a keep-alive, {keep_alives} in all"
            + (f", the last tick reaching them all in {tick_ms} ms" if heard else "")
            + "; gateway CPU "
            f"{'+'.join(f'{c:.0%}' for c in cpu)})"
        )
        for s in streams:
            s.close()
        settled = await self._settle(0, key="sse")
        idle["close_all"] = {"streams": len(streams), **settled}
        self.log(
            f"  closed {len(streams)} streams at once: the gateway counted "
            f"{settled['counted']} after {settled['settle_s']:.1f} s (slowest /health "
            f"{settled['slowest_health_s']:.1f} s, {settled['health_timeouts']} timed out)"
        )
        await self._idle_cpu()
        self.note_redis("after the SSE streams left")
        self.result["sse_idle"] = idle

    # -- sse-fanout: one channel, every stream subscribed ------------------------------
    async def sse_fanout(self) -> None:
        plan = self.plan
        channel = plan.sse_channel
        recorder = StreamRecorder(channel)
        streams, took = await open_many(
            self.sse_specs(0, plan.clients, "sse-fan", channel=channel), recorder
        )
        recorder.streams = streams
        settled = await self._settle(len(streams), key="sse")
        self.result["sse_fanout_connect_s"] = round(took, 2)
        self.result["sse_fanout_settle"] = settled
        self.log(f"  {len(streams)} SSE streams on channel {channel!r} opened in {took:.2f} s")
        saved = self.clients, self.recorder
        self.clients, self.recorder = streams, recorder

        def make(i, scheduled, step):
            body = {"channel": channel, "data": {"k": step, "s": i, "t": scheduled}}
            return "/api/v1/push", orjson.dumps(body)

        try:
            steps = await self.ladder(
                plan.fanout_rates,
                lambda: (make, None),
                scenario="sse-fanout",
                per_request=1,
                expected_each=len(streams),
                limit_ms=plan.fanout_limit_ms,
            )
        finally:
            self.clients, self.recorder = saved
            for s in streams:
                s.close()
        self.result["sse_fanout"] = [s.as_dict() for s in steps]
        self.result["sse_fanout_keep_alives"] = sum(s.comments for s in streams)
        await self._settle(0, key="sse")

    # -- sse-replay: Last-Event-ID after 1,000 missed messages --------------------------
    async def sse_replay(self) -> None:
        plan = self.plan
        tag = f"{random.getrandbits(32):08x}"
        runs = []
        for rep in range(plan.replay_repeats):
            runs.append(await self._replay_once(f"sse-replay-{tag}-{rep}", rep))
        times = sorted(r["replay_ms"] for r in runs if r["replay_ms"] is not None)
        self.result["sse_replay"] = {
            "messages": plan.replay_messages,
            "runs": runs,
            "median_ms": round(statistics.median(times), 1) if times else None,
            "worst_ms": max(times) if times else None,
            "all_ok": all(r["ok"] for r in runs),
        }

    async def _replay_once(self, user: str, rep: int) -> dict:
        plan = self.plan
        n = plan.replay_messages
        first, last = self.gateways[0], self.gateways[-1]
        path = f"/events/?user_id={user}"
        # 1. Connect, keep the welcome's id, hang up.
        stream = await open_stream(0, path, HOST, first.port, StreamSink())
        _, resume_id = stream.welcomed.result()
        stream.close()
        await self._settle(0, key="sse")
        # 2. Push n messages to the user, who is away.
        t_push = time.monotonic()
        bodies = [orjson.dumps({"user_id": user, "data": {"r": rep, "s": i}}) for i in range(n)]
        answers = await self._push_all(bodies)
        push_s = time.monotonic() - t_push
        refused = [a for a in answers if a[0] != 202]
        receipt_ids = sorted((a[1]["id"] for a in answers if a[0] == 202), key=parse_key)
        # 3. Reconnect (to the other process on Redis) with Last-Event-ID.
        sink = ReplaySink(n)
        quiet_wait_s, other_before = await self.wait_quiet()
        mark = self.cpu_mark()
        cpu0 = [gw.cpu_seconds(g.pid) for g in self.gateways]
        t0 = time.monotonic()
        problems = []
        try:
            stream = await asyncio.wait_for(
                open_stream(1, path, HOST, last.port, sink, last_event_id=resume_id), 30
            )
            welcome_at = stream.welcome_at
            welcome, _ = stream.welcomed.result()
            done_at = await asyncio.wait_for(sink.done, 60)
        except (OSError, ConnectionError, TimeoutError) as exc:
            problems.append(f"{type(exc).__name__}: {exc}"[:200])
            welcome, welcome_at, done_at = {}, None, None
        cpu = [gw.cpu_seconds(g.pid) - c for g, c in zip(self.gateways, cpu0, strict=True)]
        other = self.other_cpu(mark)
        # 4. Check: every message once, in the gateway's order, as their receipts said.
        got = [envelope for _, _, envelope in sink.events[:n]]
        got_ids = [e["id"] for e in got]
        if refused:
            problems.append(f"{len(refused)} pushes refused, e.g. {refused[0]}")
        if welcome and stream.retry is None:
            problems.append("no `retry:` hint before the welcome")
        if welcome and welcome.get("replayed") != n:
            problems.append(f"welcome says replayed {welcome.get('replayed')}")
        if got_ids != receipt_ids:
            missing = len(set(receipt_ids) - set(got_ids))
            extra = len(got_ids) - len(set(got_ids))
            problems.append(
                f"ids differ from the receipts: {len(got_ids)} got, {missing} missing, "
                f"{extra} duplicated, in order: {got_ids == sorted(got_ids, key=parse_key)}"
            )
        seqs = sorted(e["data"]["s"] for e in got if isinstance(e.get("data"), dict))
        if seqs != list(range(n)) and not problems:
            problems.append("payloads differ from what was pushed")
        if len(sink.events) >= n:
            _, id_line, envelope = sink.events[n - 1]
            if envelope["id"].encode() not in id_line:
                problems.append("the last event's id line does not name it")
        # 5. Then live: one more push must arrive on the same stream.
        live_ms = None
        if not problems:
            sink.count = n + 1
            sink.done = asyncio.get_running_loop().create_future()
            t_live = time.monotonic()
            body = orjson.dumps({"user_id": user, "data": {"r": rep, "s": n}})
            await self._push_all([body])
            try:
                live_at = await asyncio.wait_for(sink.done, 10)
                live_ms = round((live_at - t_live) * 1000, 1)
            except TimeoutError:
                problems.append("no live message after the replay")
        stream.close()
        await self._settle(0, key="sse")
        out = {
            "user": user,
            "pushed": n - len(refused),
            "push_s": round(push_s, 2),
            "replayed": len(got),
            "welcome_ms": round((welcome_at - t0) * 1000, 1) if welcome_at else None,
            "replay_ms": round((done_at - t0) * 1000, 1) if done_at else None,
            "events_per_s": round(n / (done_at - t0)) if done_at else None,
            "live_ms": live_ms,
            "server_cpu_ms": [round(c * 1000) for c in cpu],
            "other_cpu": other,
            "other_cpu_before": other_before,
            "quiet_wait_s": quiet_wait_s,
            "ok": not problems,
            "problems": problems,
        }
        self.log(
            f"  replay {rep + 1}: {n} pushed in {push_s:.1f} s; reconnect -> welcome "
            f"{out['welcome_ms']} ms, -> event {n} {out['replay_ms']} ms "
            f"({out['events_per_s']} events/s); then live in {live_ms} ms; gateway CPU "
            f"{'+'.join(str(c) for c in out['server_cpu_ms'])} ms, other {other:.2f}; "
            + ("ok" if out["ok"] else "PROBLEMS: " + "; ".join(problems))
        )
        return out
