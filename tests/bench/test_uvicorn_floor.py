"""The uvicorn empty-app floor (bench/peers/uvicorn_floor.py) starts, answers
/health, and holds and counts a WebSocket the way the comparison needs."""

import subprocess
import sys
import time
import urllib.error
import urllib.request

import orjson
import pytest
from websockets.asyncio.client import connect

from bench.gateway import ROOT, free_port


def health(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
        return orjson.loads(r.read())


def wait_for(port: int, proc: subprocess.Popen, check, timeout: float = 10.0) -> dict:
    """/health once `check` holds for it (the server may still be starting)."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read().decode(errors="replace")
        try:
            answer = health(port)
            if check(answer):
                return answer
        except OSError:
            pass
        assert time.monotonic() < deadline, "no such /health answer in time"
        time.sleep(0.05)


@pytest.fixture
def floor():
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.peers.uvicorn_floor", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(port, proc, lambda h: True)
        yield port, proc
    finally:
        proc.kill()
        proc.wait()


async def test_it_welcomes_and_counts_a_websocket(floor):
    port, proc = floor
    assert health(port) == {"status": "healthy", "connections": 0}
    async with connect(f"ws://127.0.0.1:{port}/ws/?user_id=u1") as ws:
        assert orjson.loads(await ws.recv()) == {"type": "welcome"}
        assert health(port)["connections"] == 1
    wait_for(port, proc, lambda h: h["connections"] == 0)


def test_other_paths_are_not_found(floor):
    port, _ = floor
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/push", timeout=2)
    assert exc.value.code == 404
