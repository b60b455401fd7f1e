"""Reference servers the gateway is compared with (`python -m bench.compare`).

- `socketio_server`: python-socketio on uvicorn, written as its users write it.
- `websockets_server`: a bare `websockets` server speaking the subset of the
  gateway's wire format the load generator uses.
- `uvicorn_floor`: an ASGI app that only holds WebSockets, on uvicorn with the
  gateway's flags: the least an idle WebSocket costs the gateway on uvicorn.
- `asgi`: the JSON answer the two ASGI peers share.

Each is started as a subprocess (`python -m bench.peers.<name> --port N`) and
answers `GET /health` with `{"status": "healthy", "connections": n}`.
"""
