"""Load test the gateway: `python -m bench.run` (what `make bench` runs).

Starts the gateway itself (`bin/serve`; two processes sharing Redis for the
Redis backend), pinned to one core while this generator runs on another,
connects the WebSocket clients, and measures:

1. unicast: pushes to random single users through `POST /api/v1/push`, open
   loop at rising rates; the highest rate with p99 push-to-receive latency
   under 50 ms and nothing lost; the same for `POST /api/v1/push/batch`;
2. fan-out: pushes to one channel every client subscribed to; deliveries/s
   with p99 under 250 ms and nothing lost;
3. memory: gateway RSS per idle connection, and connections accepted per second;
4. reply: `POST /api/v1/send` round trips answered by an echo bot (`ci_bot`),
   closed loop with 1, 50 and 200 callers, then open loop at rising rates;

and over Server-Sent Events (`GET /events/`), on fresh gateway processes:

5. sse-idle: 5,000 idle streams held; RSS per stream, streams opened per second;
6. sse-fanout: pushes to one channel 1,000 streams read, at rising rates,
   judged as fan-out is (p99 under 250 ms, every stream gets every message);
7. sse-replay: 1,000 messages pushed to a user while away, replayed on
   reconnect with `Last-Event-ID`; time to the last one;

and the channel scenarios (bench/channel_scenarios.py), each on fresh processes:

8. presence: 1,000 members join one channel at once (time, presence frames),
   `presence` queries (p50/p99), `publish` from one member at rising rates,
   `typing` at a fixed rate;
9. registry: 2,000 WebSockets opened (each subscribing) and closed; time
   until `/api/v1/stats` counts them all, then none; CPU per connect/disconnect.

Prints a table, writes JSON to bench/results/ and (unless `--quick` or
`--no-docs`) refreshes the results in docs/benchmarks.md.
"""

import argparse
import asyncio
import contextlib
import datetime
import importlib.metadata
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

import orjson

from . import report
from .scenarios import Plan, Session

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/11"
WS_SCENARIOS = ("unicast", "batch", "fanout", "reply")
SSE_SCENARIOS = ("sse-idle", "sse-fanout", "sse-replay")
CHANNEL_SCENARIOS = ("presence", "registry")
ALL_SCENARIOS = WS_SCENARIOS + SSE_SCENARIOS + CHANNEL_SCENARIOS


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=["memory", "redis", "both"], default="both")
    p.add_argument("--server", choices=["daphne", "uvicorn", "both"], default="daphne")
    p.add_argument(
        "--clients",
        type=int,
        default=None,
        help="WebSocket clients, and SSE streams for sse-fanout (1000)",
    )
    p.add_argument(
        "--memory-max",
        type=int,
        default=None,
        help="top up to this many idle clients for the memory scenario (5000; 0: skip)",
    )
    p.add_argument(
        "--sse-streams",
        type=int,
        default=None,
        help="idle SSE streams held by sse-idle (5000; 300 with --quick)",
    )
    p.add_argument(
        "--presence-members",
        type=int,
        default=None,
        help="WebSocket members of the presence channel (1000; 200 with --quick)",
    )
    p.add_argument(
        "--registry-connections",
        type=int,
        default=None,
        help="WebSockets opened and closed by registry (2000; 300 with --quick)",
    )
    p.add_argument("--quick", action="store_true", help="a smoke run of a minute or two")
    p.add_argument("--step-seconds", type=float, default=None, help="length of a step (5)")
    p.add_argument(
        "--http-client",
        choices=["raw", "httpx"],
        default="raw",
        help="the generator's HTTP client (raw asyncio HTTP/1.1, or httpx.AsyncClient)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait before a step for other processes to calm down (8)",
    )
    p.add_argument("--pool-size", type=int, default=None, help="HTTP connections per process")
    p.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help="comma-separated subset of "
        + ",".join(ALL_SCENARIOS)
        + " (the WebSocket memory scenario runs with any WebSocket one)",
    )
    p.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", DEFAULT_REDIS_URL))
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    p.add_argument(
        "--render",
        metavar="JSON",
        help="rewrite docs/benchmarks.md from a saved results file, run nothing",
    )
    p.add_argument("--docs", dest="docs", action="store_true", default=None)
    p.add_argument("--no-docs", dest="docs", action="store_false")
    return p.parse_args(argv)


def make_plan(args) -> Plan:
    clients = args.clients or (200 if args.quick else 1000)
    plan = Plan.quick(clients) if args.quick else Plan(clients=clients)
    if args.memory_max is not None:
        plan.memory_max = args.memory_max
    if args.sse_streams is not None:
        plan.sse_streams = args.sse_streams
    if args.presence_members is not None:
        plan.presence_members = args.presence_members
    if args.registry_connections is not None:
        plan.registry_connections = args.registry_connections
    if args.step_seconds:
        plan.step_seconds = args.step_seconds
    if args.pool_size:
        plan.pool_size = args.pool_size
    if args.quiet_wait is not None:
        plan.quiet_wait_s = args.quiet_wait
    return plan


def raise_file_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            print(f"! open files limited to {target}; {needed} wanted", file=sys.stderr)


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for package in ("Django", "channels", "daphne", "uvicorn", "websockets", "redis"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    with open("/proc/meminfo") as f:
        mem_kib = int(f.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "packages": versions,
    }


def run_header(module: str, started, gen_cpus, server_cpus) -> dict:
    """What every saved run starts with: when, the command, the commit, the
    machine and the pinning."""
    info = machine()
    return {
        "date": started.strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"python -m {module}" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""),
        "revision": revision(),
        "machine": info,
        "machine_line": (
            f"{info['nproc']} cores ({info['cpu'] or 'unknown CPU'}), "
            f"{info['memory_gib']} GiB, Python {info['python']}, "
            f"{', '.join(f'{k} {v}' for k, v in info['packages'].items())}"
        ),
        "pinning": {
            "generator": sorted(gen_cpus) if gen_cpus else None,
            "servers": sorted(server_cpus) if server_cpus else None,
        },
    }


def revision() -> str:
    """The commit under test, and whether the gateway's files differ from it."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        # --no-optional-locks: do not refresh (write) the index while someone commits.
        changed = subprocess.run(
            [
                "git",
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--",
                ".",
                ":!bench",
                ":!docs/benchmarks.md",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + (" + uncommitted changes" if changed else "")


def pinning(no_pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(generator cores, server cores): core 0 and core 1 when there are two."""
    cpus = sorted(os.sched_getaffinity(0))
    if no_pin or len(cpus) < 2:
        return None, None
    return {cpus[0]}, {cpus[1]}


async def drive_memory(session: Session) -> None:
    await session.open_pools()
    try:
        session.log("  memory and connection rate")
        await session.memory_scenario()
    finally:
        await session.close()


async def drive(session: Session, scenarios: list[str]) -> None:
    await session.open_pools()
    try:
        await session.connect_clients()
        if "unicast" in scenarios:
            session.log("  unicast (POST /api/v1/push)")
            await session.unicast()
        if "batch" in scenarios:
            session.log("  batch (POST /api/v1/push/batch)")
            await session.batch()
        if "fanout" in scenarios:
            session.log("  channel fan-out")
            await session.fanout()
        if "reply" in scenarios:
            session.log("  send with reply (POST /api/v1/send, echo bot ci_bot)")
            await session.reply()
    finally:
        await session.close()


async def drive_sse(session: Session, scenarios: list[str]) -> None:
    await session.open_pools()
    try:
        if "sse-idle" in scenarios:
            session.log("  SSE idle streams: memory and connection rate")
            await session.sse_idle()
        if "sse-fanout" in scenarios:
            session.log("  SSE channel fan-out")
            await session.sse_fanout()
        if "sse-replay" in scenarios:
            session.log("  SSE replay with Last-Event-ID")
            await session.sse_replay()
    finally:
        await session.close()


async def drive_channels(session: Session, scenario: str) -> None:
    await session.open_pools()
    try:
        if scenario == "presence":
            session.log("  presence: members join one channel, query, publish, typing")
            await session.presence()
        elif scenario == "registry":
            session.log("  registry: connect and disconnect, as /api/v1/stats counts them")
            await session.registry()
    finally:
        await session.close()


def run_channels(session: Session, plan: Plan, scenarios: list[str]) -> None:
    # Each on fresh gateway processes (one start for both with --quick).
    for scenario in scenarios:
        if not session.gateways:
            session.start(scenario)
        asyncio.run(drive_channels(session, scenario))
        if plan.fresh_for_load:
            session.stop_gateways()


def run_websocket(session: Session, plan: Plan, scenarios: list[str]) -> None:
    # Memory first, on its own processes; the load scenarios then get
    # fresh ones, so that nothing the crowd of idle clients left
    # behind (or broke) weighs on them.
    session.start("memory")
    asyncio.run(drive_memory(session))
    if plan.fresh_for_load:
        session.stop_gateways()
        session.start("load")
    asyncio.run(drive(session, scenarios))


def run_sse(session: Session, plan: Plan, scenarios: list[str]) -> None:
    # Fresh processes again: sse-idle on its own (like the WebSocket memory
    # scenario), then the fan-out and the replay.
    loads = [s for s in scenarios if s != "sse-idle"]
    if "sse-idle" in scenarios:
        session.start("sse-idle")
        if plan.fresh_for_load and loads:
            asyncio.run(drive_sse(session, ["sse-idle"]))
            session.stop_gateways()
        else:
            loads = scenarios
    if loads:
        if not session.gateways:
            session.start("sse-load")
        asyncio.run(drive_sse(session, loads))


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.render:
        run = orjson.loads(Path(args.render).read_bytes())
        report.print_run(run)
        report.update_doc(run)
        print(f"updated {report.DOC}")
        return 0
    plan = make_plan(args)
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = sorted(set(scenarios) - set(ALL_SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenarios: {', '.join(unknown)}")
    ws_scenarios = [s for s in scenarios if s in WS_SCENARIOS]
    sse_scenarios = [s for s in scenarios if s in SSE_SCENARIOS]
    channel_scenarios = [s for s in CHANNEL_SCENARIOS if s in scenarios]
    backends = ["memory", "redis"] if args.backend == "both" else [args.backend]
    servers = ["daphne", "uvicorn"] if args.server == "both" else [args.server]
    write_docs = (not args.quick) if args.docs is None else args.docs
    wanted = [plan.clients, plan.memory_max]
    if "presence" in channel_scenarios:
        wanted.append(plan.presence_members)
    if "registry" in channel_scenarios:
        wanted.append(plan.registry_connections)
    if "sse-idle" in sse_scenarios:
        wanted.append(plan.sse_streams)
    raise_file_limit(max(wanted) + 1000)
    gen_cpus, server_cpus = pinning(args.no_pin)
    if gen_cpus:
        os.sched_setaffinity(0, gen_cpus)
    started = datetime.datetime.now(datetime.UTC)
    run = {
        **run_header("bench.run", started, gen_cpus, server_cpus),
        "http_client": args.http_client,
        "clients": plan.clients,
        "scenarios": scenarios,
        "plan": plan.__dict__,
        "loadavg_start": os.getloadavg(),
        "sessions": [],
    }
    print(
        f"bench at {run['revision']}: {plan.clients} clients, backends {backends}, "
        f"servers {servers}, "
        f"generator on cores {run['pinning']['generator']}, "
        f"gateway on {run['pinning']['servers']}; load average {os.getloadavg()}"
    )
    t0 = time.monotonic()
    stamp = started.strftime("%Y%m%dT%H%M%S") + ("-quick" if args.quick else "")
    for server in servers:
        for backend in backends:
            print(f"\n== {server}, {backend} ==")
            session = Session(
                backend=backend,
                server=server,
                plan=plan,
                http_client=args.http_client,
                redis_url=args.redis_url,
                server_cpus=server_cpus,
            )
            session.result["date"] = run["date"]
            session.keep_logs = RESULTS / stamp
            parts = []
            if ws_scenarios:
                parts.append(("websocket", "error", run_websocket, ws_scenarios))
            if sse_scenarios:
                parts.append(("sse", "sse_error", run_sse, sse_scenarios))
            if channel_scenarios:
                parts.append(("channels", "channels_error", run_channels, channel_scenarios))
            session.result["parts"] = [name for name, *_ in parts]
            try:
                for _, error_key, run_part, part_scenarios in parts:
                    try:
                        run_part(session, plan, part_scenarios)
                    except Exception as exc:
                        traceback.print_exc()
                        session.result[error_key] = f"{type(exc).__name__}: {exc}"[:500]
                    finally:
                        if session.gateways:
                            session.stop_gateways()
            finally:
                session.stop()
            if session.result.get("log_problems"):
                print(f"  gateway log: {session.result['log_problems']} problem line(s), e.g.")
                for line in session.result["log_problem_sample"][:5]:
                    print(f"    {line[:200]}")
            run["sessions"].append(session.result)
    run["seconds"] = round(time.monotonic() - t0, 1)
    run["loadavg_end"] = os.getloadavg()
    report.print_run(run)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{stamp}.json"
    out.write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2))
    print(f"results: {out.relative_to(Path.cwd()) if out.is_relative_to(Path.cwd()) else out}")
    if write_docs:
        report.update_doc(run)
        print(f"updated {report.DOC}")
    print(f"took {run['seconds']} s")
    failed = any(
        s.get("error") or s.get("sse_error") or s.get("channels_error") for s in run["sessions"]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
