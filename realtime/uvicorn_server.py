"""uvicorn, started so that SIGTERM closes connections the gateway's way.

On shutdown uvicorn closes every WebSocket with 1012 (service restart) and
gives the applications no say. Here, first, every connection of the process
is ended with `server_shutdown` and 1001 (an `error` event on a stream) and
unregistered, within SHUTDOWN_GRACE seconds; uvicorn then finds them closed
and goes on with its own shutdown.

Everything else is uvicorn's own CLI.
"""

import logging

import uvicorn
from uvicorn.main import main

log = logging.getLogger(__name__)

_shutdown = uvicorn.Server.shutdown


async def shutdown(self, sockets=None):
    """Close every connection cleanly, then uvicorn's own shutdown."""
    from bridge import heartbeats  # Django is set up by now

    try:
        await heartbeats.ashutdown()
    except Exception:
        log.exception("closing connections on shutdown failed")
    await _shutdown(self, sockets)


uvicorn.Server.shutdown = shutdown

if __name__ == "__main__":
    main()
