"""History, registry and fan-out in Redis: processes sharing it are one gateway.

Each message is added to its stream's history and published on the bus in
one Lua script, so ids and bus order agree: every process hears a stream's
messages in id order. A process subscribes to a stream's bus channel only
while it has local listeners, and fans each bus message out to them itself:
one Redis message per process per delivery, never one per recipient.

Keys (all under REDIS_PREFIX): `h:<stream>` history (a Redis stream),
`p:<stream>` bus channel, `lst:<stream>` process -> listener count,
`uconn:<user>` connection id -> "process|transport|channel name",
`conns:<process>` connection id -> record, `procs` the processes,
`pend:<user>` first id stored while the user was offline, `alive:<process>`
liveness.
"""

import asyncio
import contextlib
import logging
import time

import orjson
import redis.asyncio as aioredis
from django.conf import settings
from redis.exceptions import RedisError

from .. import addressing
from ..envelope import HEAD, frame
from ..errors import Unavailable
from ..history import format_id, parse_id
from ..hub import Hub, LocalSocket
from ..instance import INSTANCE_ID
from . import Outgoing, Published

log = logging.getLogger(__name__)

ALIVE_TTL = 15  # seconds a process counts as alive without renewing
ALIVE_EVERY = 5  # seconds between renewals
# A dead process's connection records wait this long for a live process to
# sweep them (its members leave their channels then).
RECORDS_TTL = 24 * 3600
SWEEP_LOCK_TTL = 300  # seconds one process owns the sweep of a dead one
# A live-only frame with conditions travels as
# LIVE + excluded connection id + LIVE + crowd limit + LIVE + frame
# (either may be empty; JSON text never holds a raw NUL).
LIVE = "\x00"

# Join a channel's members (KEYS[1]: connection -> principal, KEYS[2]:
# principal -> connections): {1 if the principal's first, members}.
JOIN = """
if redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return {0, redis.call('HLEN', KEYS[2])}
end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
return {n == 1 and 1 or 0, redis.call('HLEN', KEYS[2])}
"""

# Leave them: {1 if the principal's last connection there, members}.
LEAVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return {0, redis.call('HLEN', KEYS[2])}
end
local n = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[2]) end
return {n <= 0 and 1 or 0, redis.call('HLEN', KEYS[2])}
"""
POOL_WAIT = 10  # seconds a command may wait for a free pooled connection

PUBLISH = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl_ms = tonumber(ARGV[3])
local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 't', ARGV[1])
redis.call('XTRIM', KEYS[1], 'MINID', now_ms - ttl_ms)
redis.call('PEXPIRE', KEYS[1], ttl_ms)
redis.call('PUBLISH', KEYS[2], ARGV[4] .. id .. ARGV[1])
local online = 0
local counts = redis.call('HGETALL', KEYS[3])
for i = 1, #counts, 2 do
  local n = tonumber(counts[i + 1])
  if n > 0 and redis.call('EXISTS', ARGV[5] .. counts[i]) == 1 then
    online = online + n
  end
end
if online == 0 and ARGV[6] == '1' then
  if not redis.call('SET', KEYS[4], id, 'NX', 'PX', ttl_ms) then
    redis.call('PEXPIRE', KEYS[4], ttl_ms)
  end
end
return {id, online}
"""

# Decrement a listener count and drop the field at zero, atomically.
DECREMENT = """
for i = 1, #KEYS do
  if redis.call('HINCRBY', KEYS[i], ARGV[1], -1) <= 0 then
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
return 0
"""


# Drop a correlation claim only if this process still holds it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


# Hand a control message to a correlation id's waiter: its process, or nil
# when nobody waits (ARGV: this process, the control channel prefix, "1" to
# end the claim, the message). A message for this process is not published.
TO_OWNER = """
local owner = redis.call('GET', KEYS[1])
if not owner then return nil end
if ARGV[3] == '1' then redis.call('DEL', KEYS[1]) end
if owner ~= ARGV[1] then redis.call('PUBLISH', ARGV[2] .. owner, ARGV[4]) end
return owner
"""


class RedisBackend:
    name = "redis"

    def __init__(self, hub: Hub, url: str) -> None:
        self.hub = hub
        # A bounded pool: a burst (thousands of clients leaving at once) waits
        # for a free connection instead of opening one per task until Redis
        # refuses more clients. No client-name handshake on connect either.
        pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=settings.REDIS_MAX_CONNECTIONS,
            timeout=POOL_WAIT,
            decode_responses=True,
            lib_name=None,
            lib_version=None,
        )
        self.client = aioredis.Redis(connection_pool=pool)
        self._publish = self.client.register_script(PUBLISH)
        self._decrement = self.client.register_script(DECREMENT)
        self._pubsub = None
        self._ready: dict[str, asyncio.Future] = {}
        self._tasks: set[asyncio.Task] = set()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._control = addressing.control_channel(INSTANCE_ID)
        self._records = addressing.records_key(INSTANCE_ID)
        self._release = self.client.register_script(RELEASE)
        self._to_owner = self.client.register_script(TO_OWNER)
        self._join = self.client.register_script(JOIN)
        self._leave = self.client.register_script(LEAVE)
        # Set by the presence module: run after each liveness renewal.
        self.on_tick = None
        # Set by the replies module: handles a control message meant for this process.
        self.on_control = lambda payload: None

    # -- life ---------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            await self._renew_alive()
            self._pubsub = self.client.pubsub()
            # The control channel (messages for this process, such as replies
            # to its waiters) also keeps the reader's listen() loop alive.
            control = self._control
            self._ready[control] = asyncio.get_running_loop().create_future()
            await self._pubsub.subscribe(control)
            self._spawn(self._read())
            self._spawn(self._keep_alive())
            await self._ready[control]
            self._started = True

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _renew_alive(self) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(addressing.alive_prefix() + INSTANCE_ID, "1", ex=ALIVE_TTL)
            pipe.sadd(addressing.processes_key(), INSTANCE_ID)
            pipe.expire(self._records, RECORDS_TTL)
            await pipe.execute()

    async def _keep_alive(self) -> None:
        while True:
            await asyncio.sleep(ALIVE_EVERY)
            try:
                await self._renew_alive()
                if self.on_tick is not None:
                    await self.on_tick()
            except Exception:
                log.exception("could not renew this process's liveness in Redis")

    async def _read(self) -> None:
        prefix_len = len(settings.REDIS_PREFIX) + 3  # "<prefix>:p:"
        head_len = len(HEAD)
        while True:
            try:
                async for msg in self._pubsub.listen():
                    kind = msg["type"]
                    channel = msg["channel"]
                    if kind == "message":
                        text = msg["data"]
                        if channel == self._control:
                            self.on_control(orjson.loads(text))
                            continue
                        exclude = crowd = None
                        if text.startswith(LIVE):
                            _, exclude, crowd, text = text.split(LIVE, 3)
                            exclude, crowd = exclude or None, int(crowd) if crowd else None
                        message_id = (
                            text[head_len : text.index('"', head_len)]
                            if text.startswith(HEAD)
                            else None
                        )
                        self.hub.deliver(channel[prefix_len:], message_id, text, exclude, crowd)
                    elif kind == "subscribe":
                        waiter = self._ready.get(channel)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(None)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Redis bus reader failed; restarting")
                await asyncio.sleep(0.5)

    async def ping(self) -> None:
        await self.client.ping()

    # -- publishing -------------------------------------------------------------
    def _script_args(self, out: Outgoing) -> tuple[list[str], list]:
        keys = [
            addressing.history_key(out.stream),
            addressing.bus_channel(out.stream),
            addressing.stream_listeners_key(out.stream),
            addressing.pending_key(out.user)
            if out.user is not None
            else addressing.history_key(out.stream),
        ]
        args = [
            out.tail,
            settings.HISTORY_SIZE,
            settings.HISTORY_TTL * 1000,
            HEAD,
            addressing.alive_prefix(),
            "1" if out.user is not None else "0",
        ]
        return keys, args

    async def publish_many(self, outgoing: list[Outgoing]) -> list[Published]:
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for out in outgoing:
                    keys, args = self._script_args(out)
                    await self._publish(keys=keys, args=args, client=pipe)
                results = await pipe.execute()
        except RedisError as exc:
            raise Unavailable() from exc
        return [Published(message_id, int(online)) for message_id, online in results]

    # -- history ----------------------------------------------------------------
    async def replay(
        self, stream: str, *, after: tuple[int, int] | None = None, start: str | None = None
    ) -> list[tuple[str, str]]:
        """Frames of `stream` after the key `after` (or from the id `start` on)."""
        oldest = (int(time.time() * 1000) - settings.HISTORY_TTL * 1000, 0)
        if after is not None and after >= oldest:
            low = "(" + format_id(after)
        elif start is not None:
            low = max(start, format_id(oldest), key=lambda i: tuple(map(int, i.split("-"))))
        else:
            low = format_id(oldest)
        entries = await self.client.xrange(addressing.history_key(stream), min=low, max="+")
        return [(message_id, frame(message_id, fields["t"])) for message_id, fields in entries]

    async def tips(self, streams: list[str]) -> dict[str, tuple[int, int] | None]:
        """The key of each stream's newest message (None for an empty stream)."""
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xrevrange(addressing.history_key(stream), count=1)
            results = await pipe.execute()
        return {
            stream: parse_id(entries[0][0]) if entries else None
            for stream, entries in zip(streams, results, strict=True)
        }

    async def take_pending(self, user: str) -> str | None:
        return await self.client.getdel(addressing.pending_key(user))

    # -- listeners and registry -----------------------------------------------------
    async def attach(self, sock: LocalSocket, streams: list[str]) -> None:
        """Make `sock` hear `streams`; returns once the bus delivers them here."""
        await self.start()
        loop = asyncio.get_running_loop()
        new = []
        for stream in streams:
            if self.hub.listen(sock, stream):
                channel = addressing.bus_channel(stream)
                self._ready[channel] = loop.create_future()
                new.append(channel)
        if new:
            await self._pubsub.subscribe(*new)
        waiters = [self._ready[addressing.bus_channel(s)] for s in streams]
        await asyncio.gather(*(asyncio.shield(w) for w in waiters if not w.done()))
        async with self.client.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.hincrby(addressing.stream_listeners_key(stream), INSTANCE_ID, 1)
            await pipe.execute()

    async def detach(self, sock: LocalSocket, streams: list[str]) -> None:
        emptied = [s for s in streams if self.hub.unlisten(sock, s)]
        await self._forget_remote(streams, emptied)

    async def _forget_remote(self, streams: list[str], emptied: list[str]) -> None:
        if emptied:
            channels = [addressing.bus_channel(s) for s in emptied]
            for channel in channels:
                self._ready.pop(channel, None)
            await self._pubsub.unsubscribe(*channels)
        if streams:
            keys = [addressing.stream_listeners_key(s) for s in streams]
            await self._decrement(keys=keys, args=[INSTANCE_ID])

    def forget(self, sock: LocalSocket) -> None:
        """Drop a socket at once; its Redis bookkeeping follows in the background."""
        streams = list(sock.streams)
        emptied = self.hub.remove(sock)
        self._spawn(self._forget_remote(streams, emptied))

    async def register(self, *, connection_id: str, address: str, record: dict) -> None:
        """Enter a connection in this process's registry hash (and its user's
        connections), renewed with this process's liveness."""
        await self.start()
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hset(self._records, connection_id, orjson.dumps(record))
            pipe.expire(self._records, RECORDS_TTL)
            if record["user"] is not None:
                pipe.hset(
                    addressing.user_connections_key(record["user"]),
                    connection_id,
                    f"{INSTANCE_ID}|{record['transport']}|{address}",
                )
            await pipe.execute()

    async def update(self, *, connection_id: str, record: dict) -> None:
        await self.client.hset(self._records, connection_id, orjson.dumps(record))

    async def update_many(self, *, records: dict[str, dict]) -> None:
        """Rewrite several connections' records in one command (heartbeat ticks)."""
        mapping = {conn: orjson.dumps(record) for conn, record in records.items()}
        await self.client.hset(self._records, mapping=mapping)

    async def unregister(self, *, user: str | None, connection_id: str) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.hdel(self._records, connection_id)
            if user is not None:
                pipe.hdel(addressing.user_connections_key(user), connection_id)
            await pipe.execute()

    async def all_records(self) -> list[dict]:
        """Every live connection's record, across the processes that are
        alive; the records of a process that stopped renewing are dropped."""
        procs = sorted(await self.client.smembers(addressing.processes_key()))
        if not procs:
            return []
        living, _ = await self._processes()
        async with self.client.pipeline(transaction=False) as pipe:
            for proc in living:
                pipe.hvals(addressing.records_key(proc))
            results = await pipe.execute()
        return [orjson.loads(value) for values in results for value in values]

    async def record(self, connection_id: str) -> dict | None:
        """One live connection's record, from whichever live process holds it."""
        living, _ = await self._processes()
        if not living:
            return None
        async with self.client.pipeline(transaction=False) as pipe:
            for proc in living:
                pipe.hget(addressing.records_key(proc), connection_id)
            results = await pipe.execute()
        found = next((value for value in results if value is not None), None)
        return None if found is None else orjson.loads(found)

    async def _processes(self) -> tuple[list[str], list[str]]:
        """The processes of the gateway: (alive, dead)."""
        procs = sorted(await self.client.smembers(addressing.processes_key()))
        if not procs:
            return [], []
        alive = await self.client.mget([addressing.alive_prefix() + p for p in procs])
        living = [p for p, a in zip(procs, alive, strict=True) if a]
        return living, [p for p, a in zip(procs, alive, strict=True) if not a]

    async def take_dead_records(self) -> list[dict]:
        """The records of processes that died, each handed to one live
        process only, and forgotten."""
        _, dead = await self._processes()
        taken = []
        for proc in dead:
            lock = addressing.redis_key("sweep", proc)
            if not await self.client.set(lock, INSTANCE_ID, nx=True, ex=SWEEP_LOCK_TTL):
                continue
            records = addressing.records_key(proc)
            taken += [orjson.loads(value) for value in await self.client.hvals(records)]
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(records)
                pipe.srem(addressing.processes_key(), proc)
                await pipe.execute()
        return taken

    # -- channel members --------------------------------------------------------------
    async def join(self, channel: str, connection_id: str, user: str) -> tuple[bool, int]:
        """Count a connection in a channel's members: (the user's first?, members)."""
        first, members = await self._join(
            keys=[addressing.members_key(channel), addressing.member_users_key(channel)],
            args=[connection_id, user],
        )
        return bool(first), int(members)

    async def leave(self, channel: str, connection_id: str, user: str) -> tuple[bool, int]:
        """Take it out: (the user's last connection there?, members)."""
        last, members = await self._leave(
            keys=[addressing.members_key(channel), addressing.member_users_key(channel)],
            args=[connection_id, user],
        )
        return bool(last), int(members)

    async def members(self, channel: str) -> list[str]:
        """The principals subscribed to a channel, across the gateway."""
        return sorted(await self.client.hkeys(addressing.member_users_key(channel)))

    async def user_connections(self, user: str, transport: str | None = None) -> dict[str, str]:
        """Live connections of a user (over one transport, if given):
        connection id -> Channels channel name.

        Entries of processes that stopped renewing their liveness are dropped.
        """
        key = addressing.user_connections_key(user)
        entries = await self.client.hgetall(key)
        if not entries:
            return {}
        owners = {conn: value.split("|", 2) for conn, value in entries.items()}
        procs = sorted({proc for proc, _, _ in owners.values()})
        alive = await self.client.mget([addressing.alive_prefix() + p for p in procs])
        living = {p for p, a in zip(procs, alive, strict=True) if a}
        dead = [conn for conn, (proc, _, _) in owners.items() if proc not in living]
        if dead:
            with contextlib.suppress(Exception):
                await self.client.hdel(key, *dead)
        return {
            conn: name
            for conn, (proc, kind, name) in owners.items()
            if proc in living and transport in (None, kind)
        }

    # -- correlation ----------------------------------------------------------------
    async def claim(self, correlation_id: str, ttl: float) -> bool:
        """Make this process the waiter on a correlation id, unless one is."""
        await self.start()
        key = addressing.correlation_key(correlation_id)
        return bool(await self.client.set(key, INSTANCE_ID, nx=True, px=int(ttl * 1000)))

    async def release(self, correlation_id: str) -> None:
        key = addressing.correlation_key(correlation_id)
        await self._release(keys=[key], args=[INSTANCE_ID])

    async def to_owner(self, correlation_id: str, payload: dict, *, end: bool = False) -> bool:
        """Hand `payload` to the process waiting on a correlation id, in one
        round trip (False when nobody waits); `end` drops the claim in the
        same step."""
        text = orjson.dumps(payload).decode()
        owner = await self._to_owner(
            keys=[addressing.correlation_key(correlation_id)],
            args=[INSTANCE_ID, addressing.control_channel(""), "1" if end else "0", text],
        )
        if owner == INSTANCE_ID:
            self.on_control(payload)
        return owner is not None

    async def send_control(self, process: str, payload: dict) -> None:
        if process == INSTANCE_ID:
            self.on_control(payload)
            return
        channel = addressing.control_channel(process)
        await self.client.publish(channel, orjson.dumps(payload).decode())

    async def publish_live(
        self, stream: str, text: str, exclude: str | None = None, crowd: int | None = None
    ) -> int:
        """A frame for the live listeners of a stream only (see Hub.deliver for
        `exclude` and `crowd`): no id, no history. Answers the processes that
        heard it."""
        if exclude is not None or crowd is not None:
            text = (
                LIVE + (exclude or "") + LIVE + ("" if crowd is None else str(crowd)) + LIVE + text
            )
        return await self.client.publish(addressing.bus_channel(stream), text)
