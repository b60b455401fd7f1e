"""The comparison's table, verdicts, GC reading and chart, from a small fixed run."""

import pytest

from bench import compare_report as report
from bench.compare import gc_delta, parse_gc


def step(rate, each, passed, *, p99=10.0, lost=0, gen=0.2, aborted=False):
    return {
        "rate": rate,
        "offered_deliveries_per_s": rate * each,
        "achieved_deliveries_per_s": rate * each if passed else rate * each * 0.6,
        "passed": passed,
        "p50_ms": p99 / 2,
        "p99_ms": p99,
        "lost": lost,
        "request_errors": {},
        "aborted": aborted,
        "generator_bound": gen > 0.9,
        "generator_cpu": gen,
        "server_cpu": [0.5],
        "other_cpu": 0.0,
        "clients_closed": 0,
        "received": rate * each,
    }


def ladder(rates, each, top_pass, **kw):
    return [step(r, each, r <= top_pass, p99=10 if r <= top_pass else 400, **kw) for r in rates]


def idle_ws(kib, conn):
    return {
        "connections": 5000,
        "kib_per_connection": kib,
        "connections_per_s": conn,
        "connect_s": 5000 / conn,
        "generator_bound": False,
    }


def target(label, kind, *, w1, push=None, batch=None, kib, conn, ws_rt, gen=0.2):
    w = {
        "w1": {"sizes": {"1000": {"steps": ladder([10, 20, 50, 100], 1000, w1, gen=gen)}}},
        "w3": {"ws": idle_ws(kib, conn)},
        "w4": {"ws": {"steps": ladder([50, 100, 200], 1, ws_rt)}},
    }
    if push is not None:
        w["w2"] = {
            "unicast": {"steps": ladder([50, 100, 200, 400], 1, push)},
            "batch": {"steps": ladder([1, 2, 5], 100, batch)},
        }
    if kind == "gateway":
        w["w3"]["sse"] = {"streams": 5000, "kib_per_stream": 12.0, "streams_per_s": 300.0}
        w["w1"]["sizes"]["1000"]["gc"] = {"pauses": 10, "over_50ms": 1, "longest_le_s": 0.1}
    return {
        "label": label,
        "name": label.split("/")[0],
        "kind": kind,
        "backend": "memory" if kind == "gateway" else "-",
        "workloads": w,
        "errors": [],
    }


def floor(kib, conn):
    skipped = {"skipped": "an empty app, it only holds idle WebSockets (W3)"}
    return {
        "label": "uvicorn-floor",
        "name": "uvicorn-floor",
        "kind": "peer",
        "backend": "-",
        "workloads": {
            "w1": skipped,
            "w2": skipped,
            "w3": {"ws": idle_ws(kib, conn)},
            "w4": skipped,
        },
        "errors": [],
    }


@pytest.fixture
def run():
    return {
        "date": "2026-12-03 12:00 UTC",
        "revision": "abc1234",
        "command": "python -m bench.compare",
        "machine_line": "2 cores",
        "pinning": {"generator": [0], "servers": [1]},
        "seconds": 60,
        "smoke": False,
        "targets": [
            target("websockets", "peer", w1=100, kib=10.0, conn=3000, ws_rt=200, gen=0.95),
            target("socketio", "peer", w1=20, push=200, batch=2, kib=40.0, conn=900, ws_rt=100),
            target(
                "gateway-uvicorn/memory",
                "gateway",
                w1=50,
                push=100,
                batch=5,
                kib=11.0,
                conn=2500,
                ws_rt=50,
            ),
        ],
    }


def test_ladder_summary_finds_the_sustained_step_and_the_peak():
    s = report.ladder_summary(ladder([10, 20, 50], 1000, 20))
    assert s["rate"] == 20
    assert s["deliveries_per_s"] == 20000
    assert s["first_fail_rate"] == 50
    assert s["peak_per_s"] == 30000  # the failing step delivered 60%, nothing lost
    assert not s["all_passed"]
    assert report.ladder_summary(ladder([10], 1, 10))["all_passed"]
    assert report.ladder_summary([]) is None


def test_generator_bound_limit_is_flagged():
    steps = ladder([10, 20, 50], 1000, 20)
    steps[2]["generator_bound"] = True  # the step that failed
    assert report.ladder_summary(steps)["generator_bound"]


def test_ratios_and_verdicts(run):
    rows = {(r[0] or None, r[4]): r for r in report.rows(run)}
    fan = rows[
        ("W1 fan-out, 1,000 subscribers: sustained deliveries/s (p99 < 250 ms)", "uvicorn/memory")
    ]
    # 50,000 vs websockets 100,000 (0.5x: met) and socketio 20,000 (2.5x)
    assert fan[6] == "0.50x" and fan[7] == "2.50x" and fan[8] == "yes"
    assert "†" in fan[2]  # websockets' limit was the generator
    push = next(r for r in report.rows(run) if r[0].startswith("W2 unicast"))
    assert push[7] == "0.50x" and push[8] == "yes" and push[6] == "—"
    batch = next(r for r in report.rows(run) if r[0].startswith("W2 batches"))
    # 500 deliveries/s against socketio's 200 single pushes/s: 2.5x, met
    assert batch[8] == "yes"
    kib = next(r for r in report.rows(run) if r[0].startswith("W3 KiB per idle WebSocket"))
    assert kib[6] == "1.10x" and kib[8] == "yes"  # at most 1.2x websockets
    conn = next(r for r in report.rows(run) if r[0].startswith("W3 connections"))
    assert conn[8] == "yes"  # 2,500 >= 2,000
    rt = next(r for r in report.rows(run) if r[0].startswith("W4 send with reply over WebSocket"))
    assert rt[8] == "**no**"  # 50 < 2,000
    gc_row = next(r for r in report.rows(run) if r[0].startswith("GC"))
    assert gc_row[5].startswith("1 of 10 pauses")


def test_uvicorn_floor_rows_follow_the_gateway(run):
    run["targets"].append(floor(kib=10.5, conn=2800))
    rows = report.rows(run)
    kib = next(n for n, r in enumerate(rows) if r[0].startswith("W3 KiB per idle WebSocket"))
    gateway, under = rows[kib], rows[kib + 1]
    assert gateway[4] == "uvicorn/memory" and gateway[6] == "1.10x"  # unchanged by the floor
    assert under[:4] == ["", "", "", ""]
    assert under[4] == "uvicorn empty-app floor" and under[5] == "10.5 (5,000)"
    assert under[6] == "1.05x" and under[7] == "0.26x" and under[8] == ""
    conn = next(n for n, r in enumerate(rows) if r[0].startswith("W3 connections"))
    assert rows[conn + 1][4] == "uvicorn empty-app floor" and rows[conn + 1][5].startswith("2,800")
    assert sum(r[4] == "uvicorn empty-app floor" for r in rows) == 2  # W3 only
    assert "empty-app floor" in report.section(run)


def test_uvicorn_floor_alone_is_shown(run):
    run["targets"] = [floor(kib=19.4, conn=1800)]
    rows = report.rows(run)
    assert [r[4] for r in rows] == ["—", "uvicorn empty-app floor"] * 2
    assert rows[1][5] == "19.4 (5,000)" and rows[1][6] == "—"


def test_table_and_section(run, tmp_path):
    text = report.table(run)
    assert text.splitlines()[0].startswith("| figure | target | websockets")
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"intro\n\n{report.START}\nold\n{report.END}\n\nafter\n")
    report.update_doc(run, doc)
    out = doc.read_text()
    assert out.startswith("intro\n") and out.endswith("\nafter\n")
    assert "old" not in out and "abc1234" in out and "bench/peers.png" in out
    assert "generator-bound steps" in out  # the note on websockets' W1
    assert "empty-app floor" not in out  # it did not run


def test_chart_is_written(run, tmp_path):
    run["targets"].append(floor(kib=10.5, conn=2800))
    path = tmp_path / "peers.png"
    report.write_chart(run, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000


def test_gc_metric_delta():
    text = "\n".join(
        [
            "# TYPE gateway_gc_pause_seconds histogram",
            'gateway_gc_pause_seconds_bucket{generation="0",le="0.01"} 8.0',
            'gateway_gc_pause_seconds_bucket{generation="0",le="0.05"} 9.0',
            'gateway_gc_pause_seconds_bucket{generation="0",le="0.1"} 10.0',
            'gateway_gc_pause_seconds_bucket{generation="0",le="+Inf"} 10.0',
            'gateway_gc_pause_seconds_count{generation="0"} 10.0',
            'gateway_gc_pause_seconds_bucket{generation="2",le="0.01"} 0.0',
            'gateway_gc_pause_seconds_bucket{generation="2",le="0.05"} 0.0',
            'gateway_gc_pause_seconds_bucket{generation="2",le="0.1"} 1.0',
            'gateway_gc_pause_seconds_bucket{generation="2",le="+Inf"} 1.0',
            'gateway_gc_pause_seconds_count{generation="2"} 1.0',
        ]
    )
    after = parse_gc(text)
    assert after["count"] == 11
    before = {"buckets": {0.01: 5.0, 0.05: 5.0, 0.1: 5.0, float("inf"): 5.0}, "count": 5.0}
    delta = gc_delta(before, after)
    assert delta == {"pauses": 6, "over_50ms": 2, "longest_le_s": 0.1}
    assert parse_gc("process_cpu_seconds_total 1.0") is None
    assert gc_delta(None, after) is None
