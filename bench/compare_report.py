"""The comparison's results: one table (each figure per target, the gateway's
ratio to each peer, the targets, and for W3 the uvicorn empty-app floor
beside the gateway), a PNG chart, a JSON copy and a
section of docs/benchmarks.md between `<!-- bench:peers:start -->` and
`<!-- bench:peers:end -->` (prose outside the markers is left alone).

Pure functions of a run (the dict `bench.compare` writes as JSON), so that
`--render` can redo all of it from a saved run.
"""

from dataclasses import dataclass
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
JSON_OUT = ROOT / "docs" / "bench" / "peers.json"
PNG_OUT = ROOT / "docs" / "bench" / "peers.png"
START, END = "<!-- bench:peers:start -->", "<!-- bench:peers:end -->"
PEERS = ("websockets", "socketio")
# uvicorn with an app that only holds WebSockets: what the gateway cannot go
# below on uvicorn, shown as a row of its own under the gateway's.
FLOOR, FLOOR_ROW = "uvicorn-floor", "uvicorn empty-app floor"
SHORT = {"websockets": "ws", "socketio": "sio"}
DASH = "—"


# --- ladders ---------------------------------------------------------------------------


def ladders(t: dict) -> list[tuple[str, list[dict]]]:
    """(name, steps) of every ladder a target ran."""
    out = []
    w = t.get("workloads", {})
    for size, res in w.get("w1", {}).get("sizes", {}).items():
        out.append((f"W1 fan-out {int(size):,}", res.get("steps", [])))
    for key, name in (("unicast", "W2 unicast"), ("batch", "W2 batches")):
        if key in w.get("w2", {}):
            out.append((name, w["w2"][key].get("steps", [])))
    for key, name in (("ws", "W4 over WebSocket"), ("http", "W4 over HTTP")):
        if "steps" in w.get("w4", {}).get(key, {}):
            out.append((name, w["w4"][key]["steps"]))
    return out


def ladder_summary(steps: list[dict]) -> dict | None:
    """The sustained step (highest passing offered rate), its latencies, the
    peak delivered without loss, and whether the generator may be the limit."""
    if not steps:
        return None
    passed = [s for s in steps if s["passed"]]
    best = max(passed, key=lambda s: s["offered_deliveries_per_s"]) if passed else None
    clean = [s for s in steps if s["lost"] == 0 and not s["request_errors"] and not s["aborted"]]
    peak = max(clean, key=lambda s: s["achieved_deliveries_per_s"], default=None)
    after = [s for s in steps if best is None or s["rate"] > best["rate"]]
    limit = next((s for s in after if not s["passed"]), None)
    bound = any(s.get("generator_bound") for s in (best, limit) if s is not None)
    return {
        "rate": best["rate"] if best else None,
        "deliveries_per_s": best["offered_deliveries_per_s"] if best else 0,
        "p50_ms": best["p50_ms"] if best else None,
        "p99_ms": best["p99_ms"] if best else None,
        "peak_per_s": round(peak["achieved_deliveries_per_s"]) if peak else None,
        "peak_p99_ms": peak["p99_ms"] if peak else None,
        "first_fail_rate": limit["rate"] if limit else None,
        "top_rate": steps[-1]["rate"],
        "all_passed": limit is None,
        "generator_bound": bound,
    }


# --- figures -------------------------------------------------------------------------------


@dataclass
class Cell:
    value: float | None  # the number compared (None: not measured)
    text: str  # what the table shows
    bound: bool = False  # the generator may be what limited it


@dataclass
class Figure:
    key: str
    title: str
    better: str  # "higher" | "lower" | "info"
    target: tuple | None = None  # the target (see `verdict`)


def fmt(x, digits: int = 0) -> str:
    if x is None:
        return DASH
    if isinstance(x, float) and digits:
        return f"{x:,.{digits}f}"
    return f"{round(x):,}" if abs(x) >= 100 or float(x).is_integer() else f"{x:,.1f}"


def _ladder_cells(cells: dict, key: str, steps: list[dict], unit_rate: str) -> None:
    s = ladder_summary(steps)
    if s is None:
        return
    mark = "†" if s["generator_bound"] else ""
    if s["rate"] is None:
        text = f"0{mark} (none passed from {fmt(steps[0]['rate'])}{unit_rate})"
    else:
        top = "+" if s["all_passed"] else ""
        text = (
            f"{fmt(s['deliveries_per_s'])}{top}{mark} ({fmt(s['rate'])}{unit_rate}; "
            f"p50 {fmt(s['p50_ms'], 1)} / p99 {fmt(s['p99_ms'], 1)} ms)"
        )
    cells[key] = Cell(s["deliveries_per_s"], text, s["generator_bound"])
    if s["peak_per_s"] is not None:
        cells[f"{key}:peak"] = Cell(
            s["peak_per_s"], f"{fmt(s['peak_per_s'])} (p99 {fmt(s['peak_p99_ms'], 1)} ms)"
        )


def target_cells(t: dict) -> dict[str, Cell]:
    """Every figure one target measured, by figure key."""
    cells: dict[str, Cell] = {}
    w = t.get("workloads", {})
    for size, res in w.get("w1", {}).get("sizes", {}).items():
        _ladder_cells(cells, f"w1:{size}", res.get("steps", []), " bcast/s")
    w2 = w.get("w2", {})
    if "unicast" in w2:
        _ladder_cells(cells, "w2:push", w2["unicast"]["steps"], "/s")
    if "batch" in w2:
        _ladder_cells(cells, "w2:batch", w2["batch"]["steps"], " req/s")
    w3 = w.get("w3", {})
    if "ws" in w3:
        ws = w3["ws"]
        cells["w3:kib"] = Cell(
            ws["kib_per_connection"], f"{ws['kib_per_connection']:.1f} ({ws['connections']:,})"
        )
        mark = "†" if ws.get("generator_bound") else ""
        cells["w3:conn"] = Cell(
            ws["connections_per_s"],
            f"{fmt(ws['connections_per_s'])}{mark} "
            f"({ws['connections']:,} in {ws['connect_s']:.1f} s)",
            bool(mark),
        )
    if "sse" in w3:
        sse = w3["sse"]
        cells["w3:sse"] = Cell(
            sse["kib_per_stream"], f"{sse['kib_per_stream']:.1f} ({sse['streams']:,})"
        )
    w4 = w.get("w4", {})
    for key in ("ws", "http"):
        if "steps" in w4.get(key, {}):
            _ladder_cells(cells, f"w4:{key}", w4[key]["steps"], "/s")
    gcs = [
        r.get("gc")
        for r in [*w.get("w1", {}).get("sizes", {}).values(), w.get("w2", {}), w.get("w4", {})]
        if r.get("gc")
    ]
    if gcs:
        over = [g["over_50ms"] for g in gcs]
        total_over = None if None in over else sum(over)
        longest = max(g["longest_le_s"] or 0.0 for g in gcs)
        cells["gc"] = Cell(
            total_over,
            f"{fmt(total_over)} of {sum(g['pauses'] for g in gcs):,} pauses "
            f"(longest ≤ {fmt(longest * 1000)} ms)",
        )
    return cells


def figures(run: dict) -> list[Figure]:
    sizes = sorted(
        {
            int(size)
            for t in run["targets"]
            for size in t.get("workloads", {}).get("w1", {}).get("sizes", {})
        }
    )
    out = []
    for size in sizes:
        out.append(
            Figure(
                f"w1:{size}",
                f"W1 fan-out, {size:,} subscribers: sustained deliveries/s (p99 < 250 ms)",
                "higher",
                ("ratio", "websockets", 0.5),
            )
        )
        out.append(Figure(f"w1:{size}:peak", f"W1 fan-out, {size:,}: peak deliveries/s", "higher"))
    out += [
        Figure(
            "w2:push",
            "W2 unicast HTTP push: sustained pushes/s (p99 < 50 ms)",
            "higher",
            ("ratio", "socketio", 0.5),
        ),
        Figure(
            "w2:batch",
            "W2 batches of 100: sustained deliveries/s (p99 < 250 ms)",
            "higher",
            ("ratio_to", "socketio", "w2:push", 1.0),
        ),
        Figure(
            "w3:kib",
            "W3 KiB per idle WebSocket (lower is better)",
            "lower",
            ("ratio_max", "websockets", 1.2),
        ),
        Figure("w3:conn", "W3 connections accepted/s", "higher", ("abs", 2000)),
        Figure("w3:sse", "W3 KiB per idle SSE stream (gateway only)", "lower"),
        Figure(
            "w4:ws",
            "W4 send with reply over WebSocket: round trips/s (p99 < 50 ms)",
            "higher",
            ("abs", 2000),
        ),
        Figure("w4:http", "W4 send with reply over HTTP: round trips/s (p99 < 50 ms)", "higher"),
        Figure("gc", "GC pauses over 50 ms during W1, W2, W4 (gateway metric)", "info"),
    ]
    return out


def target_text(target: tuple | None) -> str:
    if target is None:
        return ""
    kind = target[0]
    if kind == "ratio":
        return f"≥ {target[2]}x {target[1]}"
    if kind == "ratio_max":
        return f"≤ {target[2]}x {target[1]}"
    if kind == "ratio_to":
        return f"≥ {target[3]}x {target[1]} single pushes"
    if kind == "abs":
        return f"≥ {target[1]:,}"
    return ""


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


def verdict(fig: Figure, cell: Cell | None, peers: dict[str, dict[str, Cell]]) -> bool | None:
    """Whether the gateway's cell meets the target; None: cannot say."""
    if fig.target is None or cell is None or cell.value is None:
        return None
    kind = fig.target[0]
    if kind == "abs":
        return cell.value >= fig.target[1]
    peer_cells = peers.get(fig.target[1], {})
    ref_key = fig.target[2] if kind == "ratio_to" else fig.key
    ref = peer_cells.get(ref_key)
    r = ratio(cell.value, ref.value if ref else None)
    if r is None:
        return None
    if kind == "ratio":
        return r >= fig.target[2]
    if kind == "ratio_max":
        return r <= fig.target[2]
    if kind == "ratio_to":
        return r >= fig.target[3]
    return None


def fmt_ratio(r: float | None) -> str:
    if r is None:
        return DASH
    return f"{r:.2f}x" if r < 10 else f"{r:.0f}x"


def ratio_texts(fig: Figure, cell: Cell | None, peer_cells: dict[str, Cell | None]) -> list[str]:
    """A cell's ratio to each peer's, in the order of PEERS."""
    return [
        fmt_ratio(ratio(cell.value, pc.value)) if cell and pc and fig.better != "info" else DASH
        for pc in (peer_cells[name] for name in PEERS)
    ]


def rows(run: dict) -> list[list[str]]:
    """The table's rows: per figure, one row per gateway configuration, then
    the uvicorn floor's where it measured the figure."""
    by_label = {t["label"]: t for t in run["targets"]}
    cells = {label: target_cells(t) for label, t in by_label.items()}
    peers = {name: cells[name] for name in PEERS if name in cells}
    floor = cells.get(FLOOR, {})
    gateways = [t["label"] for t in run["targets"] if t["kind"] == "gateway"] or [None]
    out = []
    for fig in figures(run):
        peer_cells = {name: peers.get(name, {}).get(fig.key) for name in PEERS}
        floor_cell = floor.get(fig.key)
        if (
            all(c is None for c in peer_cells.values())
            and all(g is None or fig.key not in cells[g] for g in gateways)
            and floor_cell is None
        ):
            continue
        for n, label in enumerate(gateways):
            cell = cells[label].get(fig.key) if label else None
            row = [fig.title if n == 0 else "", target_text(fig.target) if n == 0 else ""]
            for name in PEERS:
                pc = peer_cells[name]
                row.append((pc.text if pc else DASH) if n == 0 else "")
            row.append(label.removeprefix("gateway-") if label else DASH)
            row.append(cell.text if cell else DASH)
            row += ratio_texts(fig, cell, peer_cells)
            met = verdict(fig, cell, peers)
            row.append({True: "yes", False: "**no**", None: DASH}[met] if fig.target else "")
            out.append(row)
        if floor_cell is not None:
            row = [""] * (2 + len(PEERS)) + [FLOOR_ROW, floor_cell.text]
            out.append([*row, *ratio_texts(fig, floor_cell, peer_cells), ""])
    return out


HEADER = [
    "figure",
    "target",
    "websockets",
    "socketio",
    "gateway",
    "gateway value",
    "x websockets",
    "x socketio",
    "met",
]


def table(run: dict) -> str:
    lines = [
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(run)]
    return "\n".join(lines)


def notes(run: dict) -> list[str]:
    """What a reader must know to trust the table: generator-bound steps,
    clients the targets closed, log problems, errors, busy neighbours."""
    out = []
    for t in run["targets"]:
        label = t["label"]
        for e in t.get("errors", []):
            out.append(f"- {label}: **error** {e}")
        bound, noisy, closed = [], [], 0
        for name, steps in ladders(t):
            for s in steps:
                if s.get("generator_bound"):
                    bound.append(f"{name} at {fmt(s['rate'])}/s ({s['generator_cpu']:.0%})")
                on_server = s.get("other_on_server_core")
                if s.get("other_cpu", 0) > 0.3 or (on_server or 0) > 0.2:
                    where = f", {on_server:.2f} on the server's" if on_server is not None else ""
                    noisy.append(
                        f"{name} at {fmt(s['rate'])}/s ({s['other_cpu']:.2f} cores{where})"
                    )
                closed += s.get("clients_closed", 0)
        if bound:
            out.append(f"- {label}: generator-bound steps (> 90% of its core): " + "; ".join(bound))
        if noisy:
            out.append(f"- {label}: other processes busy during: " + "; ".join(noisy))
        if closed:
            out.append(f"- {label}: the server closed {closed} client connection(s) during steps")
        if t.get("log_problems"):
            kinds = "; ".join(f"{k} (x{n})" for k, n in t.get("log_problem_kinds", [])[:3])
            out.append(f"- {label}: {t['log_problems']} warning/error line(s) in its log: {kinds}")
    return out


# --- the chart -------------------------------------------------------------------------


CHART = [
    # (figure key prefix, title, better)
    ("w1:", "W1 fan-out: sustained deliveries/s", "higher"),
    ("w2:push", "W2 unicast: pushes/s", "higher"),
    ("w2:batch", "W2 batches of 100: deliveries/s", "higher"),
    ("w3:kib", "W3 KiB per idle WebSocket (lower is better)", "lower"),
    ("w3:conn", "W3 connections/s", "higher"),
    ("w4:ws", "W4 round trips/s over WebSocket", "higher"),
    ("w4:http", "W4 round trips/s over HTTP", "higher"),
]
COLORS = {"websockets": "#7f7f7f", "socketio": "#4c72b0", FLOOR: "#8172b3"}
GATEWAY_COLORS = ["#dd8452", "#c44e52", "#e5ae38", "#937860"]


def write_chart(run: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # The references first, then the uvicorn floor, then the gateway's configurations.
    references = (*PEERS, FLOOR)
    labels = [name for name in references if any(t["label"] == name for t in run["targets"])]
    labels += [t["label"] for t in run["targets"] if t["label"] not in references]
    cells = {t["label"]: target_cells(t) for t in run["targets"]}
    figs = {f.key: f for f in figures(run)}
    panels = []
    for prefix, title, better in CHART:
        keys = (
            [k for k in figs if k.startswith("w1:") and not k.endswith(":peak")]
            if prefix == "w1:"
            else [prefix]
        )
        for key in keys:
            name = title if prefix != "w1:" else f"{title}, {int(key[3:]):,} subscribers"
            values = {lab: cells[lab].get(key) for lab in labels}
            if any(c is not None and c.value is not None for c in values.values()):
                panels.append((key, name, better, values))
    if not panels:
        panels.append(("", "nothing measured", "higher", {}))
    cols = 3 if len(panels) > 4 else len(panels)
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.6 * nrows), squeeze=False)
    colors = {}
    g = 0
    for lab in labels:
        if lab in COLORS:
            colors[lab] = COLORS[lab]
        else:
            colors[lab] = GATEWAY_COLORS[g % len(GATEWAY_COLORS)]
            g += 1
    for ax, (key, name, _better, values) in zip(axes.flat, panels, strict=False):
        shown = [lab for lab in labels if values.get(lab) is not None]
        heights = [values[lab].value or 0 for lab in shown]
        bars = ax.bar(range(len(shown)), heights, color=[colors[lab] for lab in shown])
        for bar, lab in zip(bars, shown, strict=True):
            cell = values[lab]
            text = fmt(cell.value) + ("†" if cell.bound else "")
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(range(len(shown)))
        ax.set_xticklabels(
            [lab.replace("gateway-", "gw-").replace("/", "\n") for lab in shown], fontsize=8
        )
        fig_def = figs.get(key)
        line = _target_line(fig_def, cells) if fig_def else None
        if line is not None:
            ax.axhline(line, color="#2ca02c", linestyle="--", linewidth=1)
            name += f"\n(dashed: target {target_text(fig_def.target)})"
        ax.set_title(name, fontsize=9)
        ax.margins(y=0.18)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"Gateway vs peers, {run.get('date', '')} ({run.get('revision', '')})"
        + (" — smoke run, not a measurement" if run.get("smoke") else "")
        + "\n† the generator used > 90% of its core: it may be the limit",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _target_line(fig: Figure, cells: dict) -> float | None:
    """Where the target sits on a figure's axis, when it has one."""
    if fig.target is None:
        return None
    kind = fig.target[0]
    if kind == "abs":
        return fig.target[1]
    peer = cells.get(fig.target[1], {})
    if kind == "ratio_to":
        ref = peer.get(fig.target[2])
        return ref.value * fig.target[3] if ref and ref.value else None
    ref = peer.get(fig.key)
    return ref.value * fig.target[2] if ref and ref.value else None


# --- the document ----------------------------------------------------------------------


def steps_block(run: dict) -> str:
    out = []
    for t in run["targets"]:
        for name, steps in ladders(t):
            if not steps:
                continue
            out.append(f"*{t['label']}, {name}*\n")
            out.append(
                "| rate/s | offered/s | achieved/s | p50 ms | p99 ms | lost | errors | "
                "generator CPU | server CPU | other CPU (on the server core) | verdict |"
            )
            out.append("|---|---|---|---|---|---|---|---|---|---|---|")
            for s in steps:
                verdict_text = "pass" if s["passed"] else "fail"
                if s["aborted"]:
                    verdict_text += " (fell behind)"
                if s.get("generator_bound"):
                    verdict_text += ", generator-bound"
                errors = ", ".join(f"{k}: {v}" for k, v in s["request_errors"].items()) or "0"
                out.append(
                    f"| {fmt(s['rate'])} | {fmt(s['offered_deliveries_per_s'])} | "
                    f"{fmt(s['achieved_deliveries_per_s'])} | {fmt(s['p50_ms'], 1)} | "
                    f"{fmt(s['p99_ms'], 1)} | {s['lost']:,} | {errors} | "
                    f"{s['generator_cpu']:.0%} | "
                    f"{' + '.join(f'{c:.0%}' for c in s['server_cpu'])} | "
                    f"{s['other_cpu']:.2f} ({fmt(s.get('other_on_server_core'), 2)}) | "
                    f"{verdict_text} |"
                )
            out.append("")
    return "\n".join(out)


def section(run: dict) -> str:
    minutes = run.get("seconds", 0) / 60
    parts = [
        f"Run {run['date']} at commit {run['revision']} with `{run['command']}` on "
        f"{run['machine_line']}; {minutes:.0f} minutes. Generator on core "
        f"{run['pinning']['generator']}, servers on {run['pinning']['servers']}.",
        "",
        table(run),
        "",
        "Cells: the sustained figure (+ when every step of the ladder passed, so the "
        "ceiling is higher), the rate that reached it and its latencies; † when the "
        "generator used more than 90% of its core at that step or the next, so the "
        "generator, not the server, may be the limit. Ratios are gateway ÷ peer (for "
        "memory, lower is better).",
    ]
    if any(t["label"] == FLOOR for t in run["targets"]):
        parts[-1] += (
            f" The *{FLOOR_ROW}* rows (ratios floor ÷ peer): an ASGI app that only "
            "accepts WebSockets and reads them, on uvicorn with the gateway's flags "
            "(`bench/peers/uvicorn_floor.py`), the least the gateway can cost on uvicorn."
        )
    parts += ["", "![gateway vs peers](bench/peers.png)"]
    n = notes(run)
    if n:
        parts += ["", "**Notes on this run**", "", *n]
    parts += [
        "",
        "<details><summary>Every step of every ladder</summary>",
        "",
        steps_block(run),
        "</details>",
    ]
    return "\n".join(parts)


def update_doc(run: dict, path: Path = DOC) -> None:
    text = path.read_text()
    if START not in text or END not in text:
        raise ValueError(f"{START} … {END} are missing from {path}")
    body = section(run)
    text = (
        text[: text.index(START)] + f"{START}\n{body}\n{END}" + text[text.index(END) + len(END) :]
    )
    path.write_text(text)


def write_docs(run: dict) -> None:
    JSON_OUT.parent.mkdir(parents=True, exist_ok=True)
    JSON_OUT.write_bytes(orjson.dumps(run, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    write_chart(run, PNG_OUT)
    update_doc(run)
