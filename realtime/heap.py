"""Keep full garbage collections short.

A full collection walks every tracked object and stalls every connection
while it does: half a second with 5,000 WebSockets on the benchmark machine.
What Django and the URLconf made at start-up lives as long as the process,
and so does what survives a full collection (connections, their sockets):
both are frozen, out of the walk, so each later full collection only walks
what was made since the last one. A frozen object that later becomes part
of a reference cycle would never be collected: a closed connection drops its
cycles (`Connection.close()`), so closing frees it by reference counting.
"""

import gc


def _freeze_survivors(phase: str, info: dict) -> None:
    if phase == "stop" and info["generation"] == 2:
        gc.freeze()


def freeze_long_lived() -> None:
    """Freeze the start-up heap, then what survives each full collection."""
    gc.collect()
    gc.freeze()
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)
