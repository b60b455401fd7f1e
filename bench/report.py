"""Results as a table on stdout, a JSON file, and sections of docs/benchmarks.md.

The document keeps one generated section per configuration (server and
backend), between `<!-- bench:<key>:start -->` and `<!-- bench:<key>:end -->`;
a run rewrites only the sections of the configurations it ran, then rebuilds
the summary table from the data line each section carries. Everything
outside the markers is prose and is left alone.
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


def summary(session: dict) -> dict:
    """The headline numbers of one configuration."""
    out = {"server": session["server"], "backend": session["backend"]}
    for name in SCENARIOS:
        if name not in session:
            continue  # not run: `update_doc` keeps the earlier numbers
        steps = _steps(session, name)
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
    problems = session.get("log_problems", 0)
    if problems:
        parts += ["", f"Gateway log: {problems:,} line(s) with a warning, an error or a traceback:"]
        parts += [""] + [
            "- {:,} x `{}`".format(count, kind.replace("`", "'").replace(") ", " phase) ", 1))
            for kind, count in session.get("log_problem_kinds", [])
        ]
    else:
        parts += ["", "Gateway log: no warnings, errors or tracebacks."]
    return "\n".join(parts)


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


def update_doc(run: dict, path: Path = DOC) -> None:
    """Replace this run's sections of the document and rebuild the summary."""
    text = path.read_text()
    for session in run["sessions"]:
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
    print()
    print(summary_table([summary(s) for s in run["sessions"]]))
    print()
