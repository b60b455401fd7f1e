"""Results as a table on stdout, a JSON file, and sections of docs/benchmarks.md.

The document keeps one generated section per configuration (server and
backend), between `<!-- bench:<key>:start -->` and `<!-- bench:<key>:end -->`;
a run rewrites only the sections of the configurations it ran, then rebuilds
the summary table from the data line each section carries. The SSE scenarios
have their own sections (`<!-- bench:sse-<key>:start -->`, data lines
`<!-- bench:sse-data {...} -->`) and summary (`bench:sse-summary`) in the
"Server-Sent Events" part of the document. Everything outside the markers is
prose and is left alone.
"""

import re
from pathlib import Path

import orjson

from .stats import StepResult, sustained

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
SECTIONS_END = "<!-- bench:sections:end -->"
SUMMARY_START, SUMMARY_END = "<!-- bench:summary:start -->", "<!-- bench:summary:end -->"
DATA = re.compile(r"<!-- bench:data (\{.*?\}) -->")

SCENARIOS = ("unicast", "batch", "fanout", "reply")
HEADINGS = {
    "unicast": "**Pushes to single users, `POST /api/v1/push` (scenario 1)**",
    "batch": "**Batches of 100, `POST /api/v1/push/batch` (scenario 1b)**",
    "fanout": "**One push to a channel with every client subscribed (scenario 2)**",
    "reply": "**Send with reply, `POST /api/v1/send` to an echo bot, open loop (scenario 4)**",
}
REPLY_CLOSED_HEADING = "**Send with reply, closed loop (scenario 4)**"
KEPT = "Kept from the previous run of this configuration"

BACKEND_TITLES = {"memory": "embedded default (in-memory)", "redis": "Redis, two processes"}


def _steps(session: dict, name: str) -> list[StepResult]:
    return [StepResult(**s) for s in session.get(name, [])]


def _ladder_summary(out: dict, name: str, steps: list[StepResult]) -> None:
    """The sustained step, the peak, the first failure and the top step of a ladder."""
    best = sustained(steps)
    out[name] = (
        {
            "deliveries_per_s": best.offered_deliveries_per_s,
            "rate": best.rate,
            "p50_ms": best.p50_ms,
            "p99_ms": best.p99_ms,
        }
        if best
        else None
    )
    clean = [s for s in steps if s.lost == 0 and not s.request_errors and not s.aborted]
    peak = max(clean, key=lambda s: s.achieved_deliveries_per_s, default=None)
    out[f"{name}_peak"] = (
        {"deliveries_per_s": round(peak.achieved_deliveries_per_s), "p99_ms": peak.p99_ms}
        if peak
        else None
    )
    failed = [s for s in steps if not s.passed]
    out[f"{name}_first_fail"] = failed[0].offered_deliveries_per_s if failed else None
    out[f"{name}_ceiling"] = max((s.offered_deliveries_per_s for s in steps), default=None)


def summary(session: dict) -> dict:
    """The headline numbers of one configuration."""
    out = {"server": session["server"], "backend": session["backend"]}
    for name in SCENARIOS:
        if name not in session:
            continue  # not run: `update_doc` keeps the earlier numbers
        _ladder_summary(out, name, _steps(session, name))
    if "reply_closed" in session:
        out["reply_closed"] = [
            {
                "callers": c["callers"],
                "per_s": c["round_trips_per_s"],
                "p50_ms": c["p50_ms"],
                "p99_ms": c["p99_ms"],
                "lost": c["lost"],
            }
            for c in session["reply_closed"]
        ]
    points = session.get("memory", {}).get("points", [])
    out["memory"] = [
        {
            "clients": p["clients"],
            "kib": p["kib_per_connection"],
            "conn_per_s": p["connections_per_s"],
        }
        for p in points
    ]
    out["date"] = session.get("date")
    return out


def _fmt(x, unit: str = "") -> str:
    if x is None:
        return "-"
    if isinstance(x, float) and x.is_integer():
        x = int(x)
    if isinstance(x, int):
        return f"{x:,}{unit}"
    return f"{x:,.1f}{unit}"


def _best_cell(s: dict, name: str) -> str:
    if name not in s:
        return "not run"
    best, ceiling, peak = s[name], s[f"{name}_ceiling"], s.get(f"{name}_peak")
    if ceiling is None:
        return "not run"
    if best is None:
        cell = "none passed"
    else:
        cell = f"**{_fmt(best['deliveries_per_s'])}** (p99 {_fmt(best['p99_ms'])} ms)"
        if s[f"{name}_first_fail"] is None and best["deliveries_per_s"] >= ceiling:
            cell += ", top step"
    if peak and (best is None or peak["deliveries_per_s"] > best["deliveries_per_s"] * 1.05):
        cell += f"; peak {_fmt(peak['deliveries_per_s'])} at p99 {_fmt(peak['p99_ms'])} ms"
    return cell


def _closed_cell(s: dict) -> str:
    closed = s.get("reply_closed")
    if not closed:
        return "not run"
    return "; ".join(
        f"{c['callers']}: {_fmt(round(c['per_s']))} ({_fmt(c['p99_ms'])})"
        + (f", **{_fmt(c['lost'])} lost**" if c["lost"] else "")
        for c in closed
    )


def reply_closed_table(session: dict) -> str:
    lines = [
        "| callers | round trips/s | p50 ms | p90 ms | p99 ms | max ms | lost | errors | "
        "generator CPU | gateway CPU | Redis CPU | other CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in session["reply_closed"]:
        errors = dict(c["errors"])
        if c.get("bot_errors"):
            errors["bot error frames"] = c["bot_errors"]
        err = ", ".join(f"{v} {k}" for k, v in errors.items()) or "0"
        server = " + ".join(f"{x:.0%}" for x in c["server_cpu"])
        redis = f"{c['redis_cpu']:.0%}" if c.get("redis_cpu") is not None else "-"
        lines.append(
            f"| {c['callers']} | {_fmt(c['round_trips_per_s'])} | {_fmt(c['p50_ms'])} | "
            f"{_fmt(c['p90_ms'])} | {_fmt(c['p99_ms'])} | {_fmt(c['max_ms'])} | "
            f"{_fmt(c['lost'])} | {err} | {c['generator_cpu']:.0%} | {server} | {redis} | "
            f"{c['other_cpu']:.2f} |"
        )
    return "\n".join(lines)


def summary_table(summaries: list[dict]) -> str:
    lines = [
        "| server | backend | unicast: pushes/s, p99 < 50 ms | batch of 100: deliveries/s, "
        "p99 < 250 ms | channel fan-out: deliveries/s, p99 < 250 ms | KiB per idle "
        "connection | connections/s | send with reply: round trips/s, p99 < 50 ms | "
        "send with reply, closed loop: callers: round trips/s (p99 ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        mem = s.get("memory") or []
        kib = ", ".join(f"{_fmt(p['kib'])} ({_fmt(p['clients'])})" for p in mem) or "-"
        rate = ", ".join(_fmt(p["conn_per_s"]) for p in mem) or "-"
        lines.append(
            f"| {s['server']} | {s['backend']} | "
            f"{_best_cell(s, 'unicast')} | {_best_cell(s, 'batch')} | {_best_cell(s, 'fanout')} | "
            f"{kib} | {rate} | {_best_cell(s, 'reply')} | {_closed_cell(s)} |"
        )
    return "\n".join(lines)


def steps_table(steps: list[StepResult]) -> str:
    lines = [
        "| rate/s | deliveries/s offered | achieved | p50 ms | p90 ms | p99 ms | max ms | "
        "lost | errors | generator CPU | gateway CPU | Redis CPU | other CPU | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        verdict = "pass" if s.passed else "fail"
        notes = []
        if s.aborted:
            notes.append("fell behind")
        if s.clients_closed:
            notes.append(f"{s.clients_closed} closed")
        elif s.clients_down:
            notes.append(f"{s.clients_down} clients down")
        if s.duplicates:
            notes.append(f"{s.duplicates} dup")
        if s.id_errors:
            notes.append(f"{s.id_errors} id errors")
        if s.noisy_retry_of:
            notes.append("second try: other processes spoiled the first")
        if notes:
            verdict += " (" + ", ".join(notes) + ")"
        errors = sum(s.request_errors.values()) if s.request_errors else 0
        server = " + ".join(f"{c:.0%}" for c in s.server_cpu)
        redis = f"{s.redis_cpu:.0%}" if s.redis_cpu is not None else "-"
        lines.append(
            f"| {_fmt(s.rate)} | {_fmt(s.offered_deliveries_per_s)} | "
            f"{_fmt(round(s.achieved_deliveries_per_s))} | {_fmt(s.p50_ms)} | "
            f"{_fmt(s.p90_ms)} | {_fmt(s.p99_ms)} | {_fmt(s.max_ms)} | {_fmt(s.lost)} | "
            f"{_fmt(errors)} | {s.generator_cpu:.0%} | {server} | {redis} | "
            f"{s.other_cpu:.2f} | {verdict} |"
        )
    return "\n".join(lines)


def memory_table(session: dict) -> str:
    mem = session.get("memory")
    if not mem:
        return ""
    lines = [
        f"Gateway RSS after warm-up: {mem['rss_baseline_kib'] / 1024:.1f} MiB "
        f"(at start {mem['rss_start_kib'] / 1024:.1f} MiB; summed over the processes).",
        "",
        "| idle clients | connect time s | connections/s | RSS MiB | KiB per connection |",
        "|---|---|---|---|---|",
    ]
    for p in mem["points"]:
        lines.append(
            f"| {_fmt(p['clients'])} | {p['connect_s']:.2f} | {_fmt(p['connections_per_s'])} | "
            f"{p['rss_kib'] / 1024:.1f} | {_fmt(p['kib_per_connection'])} |"
        )
    closed = mem.get("close_all")
    if closed:
        lines += [
            "",
            f"Closing {closed['clients']:,} of them at once: the gateway counted "
            f"{_fmt(closed['counted'])} connections again after {closed['settle_s']:.1f} s; "
            f"its slowest `/health` answer meanwhile took {closed['slowest_health_s']:.1f} s"
            + (
                f" ({closed['health_timeouts']} timed out after 5 s)."
                if closed["health_timeouts"]
                else "."
            ),
        ]
    held = session.get("redis_connections")
    if held:
        lines += [
            "",
            "Client connections held by the Redis server: "
            + "; ".join(f"{_fmt(h['count'])} {h['when']}" for h in held)
            + ".",
        ]
    down = session.get("load_clients_closed_before_load")
    if down:
        lines += [
            "",
            f"**{down['count']:,} load clients were closed by the gateway before the load "
            f"started** (close codes {down['close_codes']}).",
        ]
    return "\n".join(lines)


def section(session: dict, run: dict) -> str:
    title = BACKEND_TITLES.get(session["backend"], session["backend"])
    parts = [
        f"### {session['server']}, {title}",
        "",
        f"<!-- bench:data {orjson.dumps(summary(session)).decode()} -->",
        f"Run {run['date']} at commit {run.get('revision', 'unknown')} with "
        f"`{run['command']}` on {run['machine_line']}.",
    ]
    if session.get("error"):
        parts += ["", f"**The run failed:** `{session['error']}`"]
    mem = memory_table(session)
    if mem:
        parts += ["", "**Idle connections (scenario 3)**", "", mem]
    if session.get("reply_closed"):
        parts += ["", REPLY_CLOSED_HEADING, "", reply_closed_table(session)]
    for name in SCENARIOS:
        steps = _steps(session, name)
        if steps:
            parts += ["", HEADINGS[name], "", steps_table(steps)]
    if session.get("subscribe_s") is not None:
        parts += [
            "",
            f"{run['clients']:,} clients subscribed to the channel in "
            f"{session['subscribe_s']:.2f} s.",
        ]
    parts += ["", *gateway_log(session, sse=False)]
    return "\n".join(parts)


def gateway_log(session: dict, *, sse: bool) -> list[str]:
    """The warnings of the gateway logs of the WebSocket phases, or of the SSE ones."""
    by_phase = session.get("log_problems_by_phase")
    if by_phase is None:  # results from before the SSE scenarios
        problems = session.get("log_problems", 0)
        kinds = session.get("log_problem_kinds", [])
    else:
        phases = [p for p in by_phase if p.startswith("sse") == sse]
        problems = sum(by_phase[p]["count"] for p in phases)
        kinds = [[f"({p}) {kind}", count] for p in phases for kind, count in by_phase[p]["kinds"]]
    if not problems:
        return ["Gateway log: no warnings, errors or tracebacks."]
    return [
        f"Gateway log: {problems:,} line(s) with a warning, an error or a traceback:",
        "",
    ] + [
        "- {:,} x `{}`".format(count, kind.replace("`", "'").replace(") ", " phase) ", 1))
        for kind, count in kinds
    ]


def key_of(session: dict) -> str:
    return f"{session['server']}-{session['backend']}"


def _old_block(old: str, heading: str) -> str | None:
    """The part of an earlier section from `heading` to the next bold heading
    or the gateway-log line."""
    at = old.find(heading)
    if at < 0:
        return None
    ends = [old.find(mark, at + len(heading)) for mark in ("\n\n**", "\n\nGateway log")]
    ends = [e for e in ends if e >= 0]
    return old[at : min(ends) if ends else len(old)].rstrip()


def merge_section(new: str, old: str, session: dict) -> str:
    """Keep the scenarios this run did not run from the section's earlier
    version: their summary data and their tables."""
    m = DATA.search(old)
    if not m:
        return new
    old_data = orjson.loads(m.group(1))
    kept = [n for n in SCENARIOS if n not in session and n in old_data]
    keep_closed = "reply_closed" not in session and "reply_closed" in old_data
    if not kept and not keep_closed:
        return new
    data = summary(session)
    for name in kept:
        for key in (name, f"{name}_peak", f"{name}_first_fail", f"{name}_ceiling"):
            if key in old_data:
                data[key] = old_data[key]
    if keep_closed:
        data["reply_closed"] = old_data["reply_closed"]
    data["kept_from"] = old_data.get("kept_from") or old_data.get("date")
    new = DATA.sub(lambda _: f"<!-- bench:data {orjson.dumps(data).decode()} -->", new, count=1)
    blocks = []
    if keep_closed:
        blocks.append(_old_block(old, REPLY_CLOSED_HEADING))
    blocks += [_old_block(old, HEADINGS[name]) for name in kept]
    blocks = [b for b in blocks if b]
    provenance = next((line for line in old.splitlines() if line.startswith(KEPT)), None) or next(
        (line for line in old.splitlines() if line.startswith("Run ")), ""
    )
    if provenance.startswith("Run "):
        names = kept + (["reply closed loop"] if keep_closed else [])
        provenance = f"{KEPT} ({', '.join(names)}): {provenance}"
    cut = new.find("\n\nGateway log")
    if cut < 0:
        cut = len(new)
    extra = "\n\n" + provenance + "".join("\n\n" + b for b in blocks)
    return new[:cut] + extra + new[cut:]


def parts_of(session: dict) -> list[str]:
    """Which transports a session ran (results from before SSE: WebSocket)."""
    return session.get("parts", ["websocket"])


def update_doc(run: dict, path: Path = DOC) -> None:
    """Replace this run's sections of the document and rebuild the summaries."""
    text = path.read_text()
    for session in run["sessions"]:
        if "sse" in parts_of(session):
            text = update_sse(text, session, run)
        if "channels" in parts_of(session):
            text = update_channels(text, session, run)
        if "websocket" not in parts_of(session):
            continue
        key = key_of(session)
        start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
        body = section(session, run)
        if start in text and end in text:
            old = text[text.index(start) + len(start) : text.index(end)]
            body = merge_section(body, old, session)
        block = f"{start}\n{body}\n{end}"
        if start in text and end in text:
            text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
        else:
            text = text.replace(SECTIONS_END, f"{block}\n\n{SECTIONS_END}")
    found = [orjson.loads(m.group(1)) for m in DATA.finditer(text)]
    order = {"daphne": 0, "uvicorn": 1}
    found.sort(key=lambda s: (order.get(s["server"], 9), s["backend"] != "memory"))
    table = summary_table(found)
    if SUMMARY_START in text and SUMMARY_END in text:
        text = (
            text[: text.index(SUMMARY_START)]
            + f"{SUMMARY_START}\n{table}\n{SUMMARY_END}"
            + text[text.index(SUMMARY_END) + len(SUMMARY_END) :]
        )
    path.write_text(text)


def print_run(run: dict) -> None:
    ws = [summary(s) for s in run["sessions"] if "websocket" in parts_of(s)]
    sse = [sse_summary(s) for s in run["sessions"] if "sse" in parts_of(s)]
    channels = [channels_summary(s) for s in run["sessions"] if "channels" in parts_of(s)]
    print()
    if ws:
        print(summary_table(ws))
        print()
    if sse:
        print(sse_summary_table(sse))
        print()
    if channels:
        print(channels_summary_table(channels))
        print()


# --- Server-Sent Events ------------------------------------------------------------
SSE_SCENARIOS = ("sse-idle", "sse-fanout", "sse-replay")
SSE_KEYS = {"sse-idle": "sse_idle", "sse-fanout": "sse_fanout", "sse-replay": "sse_replay"}
SSE_HEADINGS = {
    "sse-idle": "**Idle streams (sse-idle)**",
    "sse-fanout": "**One push to a channel every stream reads (sse-fanout)**",
    "sse-replay": "**Replay on reconnect with `Last-Event-ID` (sse-replay)**",
}


def _data_pattern(part: str) -> re.Pattern:
    return re.compile(rf"<!-- bench:{part}-data (\{{.*?\}}) -->")


def _carry_over(
    new: str, old: str, old_data: dict, data: dict, kept: list[str], *, part: str, headings: dict
) -> str:
    """Put the earlier results of the scenarios this run did not run (`kept`,
    their summary keys already copied into `data`) into the new section, with
    where they came from."""
    data["kept_from"] = old_data.get("kept_from") or old_data.get("date")
    new = _data_pattern(part).sub(
        lambda _: f"<!-- bench:{part}-data {orjson.dumps(data).decode()} -->", new, count=1
    )
    blocks = [b for b in (_old_block(old, headings[name]) for name in kept) if b]
    provenance = next((line for line in old.splitlines() if line.startswith(KEPT)), None) or next(
        (line for line in old.splitlines() if line.startswith("Run ")), ""
    )
    if provenance.startswith("Run "):
        provenance = f"{KEPT} ({', '.join(kept)}): {provenance}"
    cut = new.find("\n\nGateway log")
    if cut < 0:
        cut = len(new)
    return new[:cut] + "\n\n" + provenance + "".join("\n\n" + b for b in blocks) + new[cut:]


def _replace_part(text: str, session: dict, body: str, merge, *, part: str, table) -> str:
    """Replace one configuration's section of a part (`sse`, `channels`) of the
    document, merged with its earlier version, and rebuild the part's summary."""
    key = f"{part}-{key_of(session)}"
    start, end = f"<!-- bench:{key}:start -->", f"<!-- bench:{key}:end -->"
    sections_end = f"<!-- bench:{part}-sections:end -->"
    summary_start = f"<!-- bench:{part}-summary:start -->"
    summary_end = f"<!-- bench:{part}-summary:end -->"
    if start in text and end in text:
        old = text[text.index(start) + len(start) : text.index(end)]
        block = f"{start}\n{merge(body, old, session)}\n{end}"
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) :]
    elif sections_end in text:
        text = text.replace(sections_end, f"{start}\n{body}\n{end}\n\n{sections_end}")
    else:
        raise ValueError(f"{sections_end} is missing from {DOC.name}")
    found = [orjson.loads(m.group(1)) for m in _data_pattern(part).finditer(text)]
    order = {"daphne": 0, "uvicorn": 1}
    found.sort(key=lambda s: (order.get(s["server"], 9), s["backend"] != "memory"))
    if summary_start in text and summary_end in text:
        text = (
            text[: text.index(summary_start)]
            + f"{summary_start}\n{table(found)}\n{summary_end}"
            + text[text.index(summary_end) + len(summary_end) :]
        )
    return text


SSE_DATA = _data_pattern("sse")


def sse_summary(session: dict) -> dict:
    """The headline SSE numbers of one configuration (only the scenarios run)."""
    out = {"server": session["server"], "backend": session["backend"]}
    idle = session.get("sse_idle")
    if idle:
        top = idle["points"][-1] if idle["points"] else {}
        out["sse-idle"] = {
            "streams": top.get("streams"),
            "held": idle.get("hold", {}).get("held"),
            "per_s": [p["streams_per_s"] for p in idle["points"]],
            "kib": [[p["streams"], p["kib_per_stream"]] for p in idle["points"]],
        }
    if "sse_fanout" in session:
        _ladder_summary(out, "sse-fanout", _steps(session, "sse_fanout"))
    replay = session.get("sse_replay")
    if replay:
        out["sse-replay"] = {
            "messages": replay["messages"],
            "runs": len(replay["runs"]),
            "median_ms": replay["median_ms"],
            "worst_ms": replay["worst_ms"],
            "all_ok": replay["all_ok"],
        }
    out["date"] = session.get("date")
    return out


def sse_summary_table(summaries: list[dict]) -> str:
    lines = [
        "| server | backend | idle streams held | streams opened/s | KiB per idle stream | "
        "channel fan-out: deliveries/s, p99 < 250 ms | replay: reconnect to last event, "
        "median (worst) |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        idle = s.get("sse-idle")
        if idle:
            held = f"{_fmt(idle['held'])} of {_fmt(idle['streams'])}"
            per_s = ", ".join(_fmt(x) for x in idle["per_s"])
            kib = ", ".join(f"{_fmt(k)} ({_fmt(n)})" for n, k in idle["kib"])
        else:
            held = per_s = kib = "not run"
        replay = s.get("sse-replay")
        if replay:
            rcell = (
                f"{_fmt(replay['messages'])} events: **{_fmt(replay['median_ms'])} ms** "
                f"({_fmt(replay['worst_ms'])} ms), {replay['runs']} runs"
                + ("" if replay["all_ok"] else ", **some incomplete**")
            )
        else:
            rcell = "not run"
        lines.append(
            f"| {s['server']} | {s['backend']} | {held} | {per_s} | {kib} | "
            f"{_best_cell(s, 'sse-fanout')} | {rcell} |"
        )
    return "\n".join(lines)


def sse_idle_table(idle: dict) -> str:
    lines = [
        f"Gateway RSS after warm-up: {idle['rss_baseline_kib'] / 1024:.1f} MiB "
        f"(at start {idle['rss_start_kib'] / 1024:.1f} MiB; summed over the processes).",
        "",
        "| idle streams | open time s | streams/s | RSS MiB | KiB per stream | other CPU |",
        "|---|---|---|---|---|---|",
    ]
    for p in idle["points"]:
        lines.append(
            f"| {_fmt(p['streams'])} | {p['connect_s']:.2f} | {_fmt(p['streams_per_s'])} | "
            f"{p['rss_kib'] / 1024:.1f} | {_fmt(p['kib_per_stream'])} | "
            f"{p.get('other_cpu', 0):.2f} |"
        )
    hold = idle.get("hold")
    if hold:
        cpu = " + ".join(f"{c:.0%}" for c in hold["server_cpu"])
        lines += [
            "",
            f"Held for {hold['seconds']:.0f} s: {_fmt(hold['held'])} of "
            f"{_fmt(hold['streams'])} streams still open (the gateway counted "
            f"{_fmt(hold['counted'])}); "
            + (
                f"{_fmt(hold['heard_keep_alive'])} of them heard a keep-alive comment "
                f"({_fmt(hold['keep_alives'])} in all; the last tick took "
                f"{_fmt(hold.get('keep_alive_spread_ms'))} ms to reach them all)"
                if "heard_keep_alive" in hold
                else f"{_fmt(hold['keep_alives'])} keep-alive comments heard"
            )
            + f"; gateway CPU meanwhile {cpu}, other processes "
            f"{hold.get('other_cpu', 0):.2f} cores.",
        ]
    closed = idle.get("close_all")
    if closed:
        lines += [
            "",
            f"Closing {closed['streams']:,} of them at once: the gateway counted "
            f"{_fmt(closed['counted'])} streams again after {closed['settle_s']:.1f} s; "
            f"its slowest `/health` answer meanwhile took {closed['slowest_health_s']:.1f} s"
            + (
                f" ({closed['health_timeouts']} timed out after 5 s)."
                if closed["health_timeouts"]
                else "."
            ),
        ]
    return "\n".join(lines)


def sse_replay_table(replay: dict) -> str:
    lines = [
        "| run | pushed | push time s | reconnect to welcome ms | reconnect to last event ms "
        "| events/s | then live ms | gateway CPU ms | other CPU | check |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for n, r in enumerate(replay["runs"], 1):
        check = "all in order, once" if r["ok"] else "; ".join(r["problems"])
        lines.append(
            f"| {n} | {_fmt(r['pushed'])} | {r['push_s']:.1f} | {_fmt(r['welcome_ms'])} | "
            f"{_fmt(r['replay_ms'])} | {_fmt(r['events_per_s'])} | {_fmt(r['live_ms'])} | "
            f"{' + '.join(_fmt(c) for c in r['server_cpu_ms'])} | "
            f"{r.get('other_cpu', 0):.2f} | {check} |"
        )
    return "\n".join(lines)


def sse_section(session: dict, run: dict) -> str:
    title = BACKEND_TITLES.get(session["backend"], session["backend"])
    parts = [
        f"#### {session['server']}, {title}: SSE",
        "",
        f"<!-- bench:sse-data {orjson.dumps(sse_summary(session)).decode()} -->",
        f"Run {run['date']} at commit {run.get('revision', 'unknown')} with "
        f"`{run['command']}` on {run['machine_line']}.",
    ]
    if session.get("sse_error"):
        parts += ["", f"**The run failed:** `{session['sse_error']}`"]
    if session.get("sse_idle"):
        parts += ["", SSE_HEADINGS["sse-idle"], "", sse_idle_table(session["sse_idle"])]
    steps = _steps(session, "sse_fanout")
    if steps:
        parts += ["", SSE_HEADINGS["sse-fanout"], "", steps_table(steps)]
        if session.get("sse_fanout_connect_s") is not None:
            parts += [
                "",
                f"{run['clients']:,} streams opened (with `channel=`, up to their welcome) in "
                f"{session['sse_fanout_connect_s']:.2f} s.",
            ]
    if session.get("sse_replay"):
        replay = session["sse_replay"]
        parts += [
            "",
            SSE_HEADINGS["sse-replay"],
            "",
            f"{_fmt(replay['messages'])} messages missed per run; median "
            f"{_fmt(replay['median_ms'])} ms, worst {_fmt(replay['worst_ms'])} ms from "
            "reconnecting to the last replayed event.",
            "",
            sse_replay_table(replay),
        ]
    parts += ["", *gateway_log(session, sse=True)]
    return "\n".join(parts)


def sse_merge(new: str, old: str, session: dict) -> str:
    """Keep the SSE scenarios this run did not run from the section's earlier version."""
    m = SSE_DATA.search(old)
    if not m:
        return new
    old_data = orjson.loads(m.group(1))
    kept = [n for n in SSE_SCENARIOS if SSE_KEYS[n] not in session and n in old_data]
    if not kept:
        return new
    data = sse_summary(session)
    for name in kept:
        for key in (name, f"{name}_peak", f"{name}_first_fail", f"{name}_ceiling"):
            if key in old_data:
                data[key] = old_data[key]
    return _carry_over(new, old, old_data, data, kept, part="sse", headings=SSE_HEADINGS)


def update_sse(text: str, session: dict, run: dict) -> str:
    """Replace one configuration's SSE section and rebuild the SSE summary."""
    return _replace_part(
        text, session, sse_section(session, run), sse_merge, part="sse", table=sse_summary_table
    )


# --- Channels: presence and registry ---------------------------------------------
CH_SCENARIOS = ("presence", "registry")
CH_KEYS = {  # the result keys of each scenario, and the summary keys
    "presence": (
        ("presence", "publish", "typing"),
        ("presence", "publish", "publish_peak", "publish_first_fail", "publish_ceiling", "typing"),
    ),
    "registry": (("registry",), ("registry",)),
}
CH_HEADINGS = {
    "presence": "**One channel, many members: join, query, `publish`, `typing` (presence)**",
    "registry": "**Connect and disconnect as `/api/v1/stats` counts them (registry)**",
}
CH_DATA = _data_pattern("channels")


def channels_summary(session: dict) -> dict:
    """The headline numbers of the channel scenarios of one configuration."""
    out = {"server": session["server"], "backend": session["backend"]}
    pres = session.get("presence")
    if pres and "join" in pres:
        join, query = pres["join"], pres.get("query", {})
        out["presence"] = {
            "members": pres["members"],
            "join_s": join["subscribed_s"],
            "last_event_s": join["last_event_s"],
            "frames": join["presence_frames"],
            "expected": join["expected_about"],
            "max_per_member": join["max_per_member"],
            "query_p50_ms": query.get("p50_ms"),
            "query_p99_ms": query.get("p99_ms"),
            "queries": query.get("answered"),
            "query_wrong": query.get("wrong"),
        }
    if "publish" in session:
        _ladder_summary(out, "publish", _steps(session, "publish"))
    if session.get("typing"):
        t = session["typing"][0]
        out["typing"] = {
            "rate": t["rate"],
            "deliveries_per_s": t["achieved_deliveries_per_s"],
            "p99_ms": t["p99_ms"],
            "lost": t["lost"],
            "to_sender": t["misrouted"],
            "passed": t["passed"],
        }
    reg = session.get("registry")
    if reg:
        o, c = reg["open"], reg["close"]
        out["registry"] = {
            "connections": o["connections"],
            "per_s": o["per_s"],
            "stats_all_s": o["stats_all_s"],
            "stats_none_s": c["stats_none_s"],
            "cpu_ms_connect": o["server_cpu_ms_per_connect"],
            "cpu_ms_disconnect": c["server_cpu_ms_per_disconnect"],
        }
    out["date"] = session.get("date")
    return out


def channels_summary_table(summaries: list[dict]) -> str:
    lines = [
        "| server | backend | join: members, all subscribed s (presence frames) | "
        "presence query p50 / p99 ms | publish from a member: deliveries/s, p99 < 250 ms | "
        "typing: frames/s to the others, p99 | registry: connections/s (connect + subscribe) "
        "| stats counts all / none after s | gateway CPU ms per connect / disconnect |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        p = s.get("presence")
        if p:
            join = (
                f"{_fmt(p['members'])}: {p['join_s']:.2f} s ({_fmt(p['frames'])} frames, "
                f"about {_fmt(p['expected'])} expected)"
            )
            query = f"{_fmt(p['query_p50_ms'])} / {_fmt(p['query_p99_ms'])}" + (
                f", **{p['query_wrong']} wrong**" if p.get("query_wrong") else ""
            )
        else:
            join = query = "not run"
        t = s.get("typing")
        if t:
            typing = (
                f"{_fmt(t['rate'])}/s: {_fmt(round(t['deliveries_per_s']))}/s, "
                f"p99 {_fmt(t['p99_ms'])} ms"
                + ("" if t["passed"] else ", **fail**")
                + (f", {_fmt(t['lost'])} lost" if t["lost"] else "")
                + (f", {_fmt(t['to_sender'])} to the sender" if t["to_sender"] else "")
            )
        else:
            typing = "not run"
        r = s.get("registry")
        if r:
            reg = [
                f"{_fmt(r['per_s'])} ({_fmt(r['connections'])})",
                f"{_fmt(r['stats_all_s'])} / {_fmt(r['stats_none_s'])}",
                f"{_fmt(r['cpu_ms_connect'])} / {_fmt(r['cpu_ms_disconnect'])}",
            ]
        else:
            reg = ["not run"] * 3
        lines.append(
            f"| {s['server']} | {s['backend']} | {join} | {query} | "
            f"{_best_cell(s, 'publish')} | {typing} | {' | '.join(reg)} |"
        )
    return "\n".join(lines)


def presence_block(session: dict, run: dict) -> str:
    pres = session["presence"]
    join, q = pres["join"], pres["query"]
    lines = [
        f"{_fmt(pres['members'])} members (`member-<i>`) connected over "
        f"{pres['connect_s']:.1f} s, then all sent `subscribe` to `{pres['channel']}` at once.",
        "",
        "| phase | result | gateway CPU | other CPU |",
        "|---|---|---|---|",
        f"| join | all `subscribed` after {join['subscribed_s']:.2f} s "
        f"({_fmt(join['joins_per_s'])} joins/s), last `presence` event at "
        f"{join['last_event_s']:.2f} s; **{_fmt(join['presence_frames'])} presence frames** "
        f"(about {_fmt(join['expected_about'])} expected: "
        f"{', '.join(f'{v:,} {k}' for k, v in join['events'].items()) or 'none'}), "
        f"announcing {_fmt(join.get('join_events'))} distinct joins; at most "
        f"{_fmt(join['max_per_member'])} to one member, {_fmt(join['members_with_events'])} "
        f"members got any | {_fmt(join['server_cpu_ms'])} ms "
        f"({_fmt(join['server_cpu_ms_per_join'])} per join) | {join['other_cpu']:.2f} |",
        f"| {_fmt(q['answered'])} `presence` queries, one at a time | p50 {_fmt(q['p50_ms'])} ms, "
        f"p90 {_fmt(q['p90_ms'])}, p99 **{_fmt(q['p99_ms'])}**, max {_fmt(q['max_ms'])}; "
        f"{_fmt(q['answer_bytes'])} bytes per answer; "
        + (
            "every answer listed every member"
            if not q["wrong"]
            else f"**{q['wrong']} wrong**: {q['problems']}"
        )
        + f" | {_fmt(q['server_cpu_ms_per_query'])} ms per query | {q['other_cpu']:.2f} |",
    ]
    if pres.get("presence_events_after_join"):
        lines += ["", f"{pres['presence_events_after_join']:,} presence events after the join."]
    steps = _steps(session, "publish")
    if steps:
        lines += [
            "",
            f"*`publish` from `member-0` over its WebSocket, to all {pres['members']:,} "
            "members (itself included), latency from each frame's scheduled time:*",
            "",
            steps_table(steps),
        ]
    if session.get("typing"):
        t = StepResult(**session["typing"][0])
        lines += [
            "",
            f"*`typing` from `member-0` at {_fmt(t.rate)} frames/s for {_fmt(t.duration_s)} s, "
            f"to the {pres['members'] - 1:,} others ({t.misrouted} heard by the sender, "
            f"{t.id_errors} out of order):*",
            "",
            steps_table([t]),
        ]
    return "\n".join(lines)


def registry_block(session: dict) -> str:
    o, c = session["registry"]["open"], session["registry"]["close"]
    redis_o = f", Redis {o['redis_cpu']:.0%}" if o.get("redis_cpu") is not None else ""
    return "\n".join(
        [
            "| phase | time | as `/api/v1/stats` counts | gateway CPU | other CPU |",
            "|---|---|---|---|---|",
            f"| open {_fmt(o['connections'])} WebSockets (100 handshakes in flight), each "
            f"subscribing to its own channel | {o['opened_s']:.2f} s, "
            f"**{_fmt(o['per_s'])}/s** | all counted after **{_fmt(o['stats_all_s'])} s** "
            f"({_fmt(o['subscriptions_counted'])} subscriptions; slowest answer "
            f"{_fmt(o['stats_slowest_answer_s'])} s) | **{_fmt(o['server_cpu_ms_per_connect'])} "
            f"ms per connect** ({' + '.join(f'{x:.0%}' for x in o['server_cpu'])}{redis_o}; "
            f"+{_fmt(o['kib_per_connection'])} KiB RSS each) | {o['other_cpu']:.2f} |",
            f"| close them all at once | | none counted after **{_fmt(c['stats_none_s'])} s** "
            f"(slowest answer {_fmt(c['stats_slowest_answer_s'])} s) | "
            f"**{_fmt(c['server_cpu_ms_per_disconnect'])} ms per disconnect** | "
            f"{c['other_cpu']:.2f} |",
        ]
    )


def channels_section(session: dict, run: dict) -> str:
    title = BACKEND_TITLES.get(session["backend"], session["backend"])
    parts = [
        f"#### {session['server']}, {title}: channels",
        "",
        f"<!-- bench:channels-data {orjson.dumps(channels_summary(session)).decode()} -->",
        f"Run {run['date']} at commit {run.get('revision', 'unknown')} with "
        f"`{run['command']}` on {run['machine_line']}.",
    ]
    if session.get("channels_error"):
        parts += ["", f"**The run failed:** `{session['channels_error']}`"]
    if session.get("presence", {}).get("query"):
        parts += ["", CH_HEADINGS["presence"], "", presence_block(session, run)]
    if session.get("registry"):
        parts += ["", CH_HEADINGS["registry"], "", registry_block(session)]
    by_phase = session.get("log_problems_by_phase", {})
    phases = [p for p in by_phase if p in CH_SCENARIOS]
    problems = sum(by_phase[p]["count"] for p in phases)
    if problems:
        parts += ["", f"Gateway log: {problems:,} line(s) with a warning, an error or a traceback:"]
        parts += [""] + [
            "- {:,} x `({} phase) {}`".format(count, p, kind.replace("`", "'"))
            for p in phases
            for kind, count in by_phase[p]["kinds"]
        ]
    else:
        parts += ["", "Gateway log: no warnings, errors or tracebacks."]
    return "\n".join(parts)


def channels_merge(new: str, old: str, session: dict) -> str:
    """Keep the channel scenarios this run did not run from the earlier section."""
    m = CH_DATA.search(old)
    if not m:
        return new
    old_data = orjson.loads(m.group(1))
    kept = [
        n
        for n in CH_SCENARIOS
        if not any(k in session for k in CH_KEYS[n][0]) and CH_KEYS[n][1][0] in old_data
    ]
    if not kept:
        return new
    data = channels_summary(session)
    for name in kept:
        for key in CH_KEYS[name][1]:
            if key in old_data:
                data[key] = old_data[key]
    return _carry_over(new, old, old_data, data, kept, part="channels", headings=CH_HEADINGS)


def update_channels(text: str, session: dict, run: dict) -> str:
    """Replace one configuration's channels section and rebuild their summary."""
    return _replace_part(
        text,
        session,
        channels_section(session, run),
        channels_merge,
        part="channels",
        table=channels_summary_table,
    )
