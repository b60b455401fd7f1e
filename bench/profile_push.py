"""Profile `POST /api/v1/push` in process (no network) with pyinstrument.

    python -m bench.profile_push docs/profiles/push-after.txt
    python -m bench.profile_push --root /path/to/another/checkout docs/profiles/push-before.txt

Imports the gateway at ROOT (this checkout by default) on the embedded
default with a throw-away SQLite database, sends pushes to a user straight
to its ASGI application, measures the CPU per request (all threads) without
the profiler, then writes pyinstrument's text profile of the same run.
"""

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

BODY = b'{"user_id": "u1", "data": {"t": 1.0}}'
SCOPE = {
    "type": "http",
    "asgi": {"version": "3.0"},
    "http_version": "1.1",
    "method": "POST",
    "scheme": "http",
    "path": "/api/v1/push",
    "raw_path": b"/api/v1/push",
    "query_string": b"",
    "root_path": "",
    "headers": [
        (b"host", b"127.0.0.1"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(BODY)).encode()),
    ],
    "client": ("127.0.0.1", 5555),
    "server": ("127.0.0.1", 8000),
}


async def _push(application) -> None:
    sent = False

    async def receive():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": BODY, "more_body": False}
        await asyncio.sleep(3600)

    out = []

    async def send(message):
        out.append(message)

    await application(dict(SCOPE), receive, send)
    if out[0]["status"] != 202:
        raise RuntimeError(f"push answered {out[0]['status']}")


async def _pushes(application, n: int) -> None:
    for _ in range(n):
        await _push(application)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile_push", description=__doc__)
    p.add_argument("out", type=Path, help="where to write the text profile")
    p.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent)
    p.add_argument("--requests", type=int, default=3000)
    args = p.parse_args(argv)
    out = args.out.resolve()
    db = Path(tempfile.mkdtemp()) / "db.sqlite3"
    os.environ.update(
        DEBUG="true",
        DATABASE_URL=f"sqlite:///{db}",
        LOG_LEVEL="WARNING",
        REDIS_URL="",
        API_RATE_LIMIT="1000000",
        API_RATE_BURST="1000000",
    )
    sys.path.insert(0, str(args.root.resolve()))
    os.chdir(args.root)
    from django.core.management import call_command
    from pyinstrument import Profiler

    from realtime.asgi import application

    call_command("migrate", verbosity=0)
    asyncio.run(_pushes(application, 200))  # warm up
    started = time.process_time()
    asyncio.run(_pushes(application, args.requests))
    cpu_us = (time.process_time() - started) / args.requests * 1e6
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    profiler.start()
    asyncio.run(_pushes(application, args.requests))
    profiler.stop()
    out.write_text(
        f"# POST /api/v1/push to a user, in process (no network), {args.requests} requests\n"
        f"# CPU per request (all threads, without the profiler): {cpu_us:.0f} us\n\n"
        + profiler.output_text(unicode=False, color=False)
    )
    print(f"{cpu_us:.0f} us of CPU per push; profile in {out}")


if __name__ == "__main__":
    main()
