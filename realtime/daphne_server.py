"""Daphne, started with the close codes the gateway's contract uses, and
with back-pressure on what an application sends.

Autobahn, under Daphne, lets an application close a socket only with 1000 or
3000-4999, and turns anything else into an error and a 1011. RFC 6455 lets a
server send 1001, 1008, 1009, 1011, 1013 too, and clients of the gateway rely
on them (1008 duplicate, 1009 too large, 1013 slow consumer), so this
launcher sends those as they are, and has Autobahn close a connection it
fails (a frame over Daphne's cap) with its code rather than dropping it.

Daphne hands every message an application sends to Twisted and returns at
once, so a client that stops reading grows the server's memory without
bound, and the gateway's per-connection send queue (1013 / slow_consumer)
never fills. Here a send returns at once while the connection's outgoing
buffer is small, and waits for it to drain once it passes HIGH_WATER.

On SIGTERM Daphne cancels every application without a close frame or its
`disconnect()`. Here, first, every connection of the process is ended the
gateway's way (`server_shutdown`, then 1001 on a WebSocket; an `error` event
on a stream) and unregistered, within SHUTDOWN_GRACE seconds; then Daphne
cancels what is left and stops.

Daphne's access log writes each request line whole, query string included;
credentials a client may put there (`?token=`, `?api_key=`) are masked.

Everything else is Daphne's own CLI.
"""

import asyncio
import logging
import re

from daphne.access import AccessLogGenerator
from daphne.cli import CommandLineInterface
from daphne.server import Server
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol
from twisted.internet import defer

log = logging.getLogger(__name__)

# Bytes queued in Twisted for one connection before a send waits, and the
# level it waits for. A frame in flight never waits.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
DRAIN_POLL = (0.005, 0.1)  # seconds between checks of a full buffer: first, at most

# Close codes RFC 6455 (section 7.4.1) and the IANA registry allow a server to send.
SERVER_CLOSE_CODES = frozenset({1000, 1001, 1008, 1009, 1011, 1012, 1013, 1014})


def server_close(self, code=None):
    """Daphne's serverClose, without Autobahn's narrower application range."""
    code = 1000 if code is None else code
    if code in SERVER_CLOSE_CODES or 3000 <= code <= 4999:
        self.sendCloseFrame(code=code, isReply=False)
    else:
        self.sendClose(code=1000)


_factory_init = WebSocketFactory.__init__


def factory_init(self, *args, **kwargs):
    """Daphne's factory, closing with a code (1009 for an oversize frame)
    where Autobahn would otherwise drop the TCP connection without one."""
    _factory_init(self, *args, **kwargs)
    self.setProtocolOptions(failByDrop=False)


def _buffered(transport) -> int:
    """Bytes a Twisted TCP transport still has to write (0 if it cannot say)."""
    try:
        return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
    except AttributeError:
        return 0


_handle_reply = Server.handle_reply


async def handle_reply(self, protocol, message):
    """Daphne's handle_reply, waiting while the connection's buffer is full."""
    await _handle_reply(self, protocol, message)
    if not (message["type"] == "websocket.send" or message.get("more_body")):
        return  # a close or a response's end: nothing follows to hold back
    transport = getattr(protocol, "transport", None)
    if transport is None or _buffered(transport) <= HIGH_WATER:
        return
    delay = DRAIN_POLL[0]
    while _buffered(transport) > LOW_WATER:
        state = self.connections.get(protocol)
        if state is None or state.get("disconnected") or transport.disconnected:
            return
        await asyncio.sleep(delay)
        delay = min(delay * 2, DRAIN_POLL[1])


_kill_all_applications = Server.kill_all_applications


def kill_all_applications(self):
    """Daphne's 'before shutdown' trigger: close every connection cleanly
    first (bounded by SHUTDOWN_GRACE), then cancel the applications."""
    from bridge import heartbeats  # Django is set up by now

    async def close_all():
        try:
            await heartbeats.ashutdown()
        except Exception:
            log.exception("closing connections on shutdown failed")

    closing = defer.Deferred.fromFuture(asyncio.ensure_future(close_all()))
    closing.addCallback(lambda _: _kill_all_applications(self))
    return closing


SECRET_PARAMS = re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey)=)[^&\s\"]*")
_write_entry = AccessLogGenerator.write_entry


def write_entry(self, host, date, request, *args, **kwargs):
    """Daphne's access log line, with credentials in the query string masked."""
    _write_entry(self, host, date, SECRET_PARAMS.sub(r"\1[masked]", request), *args, **kwargs)


AccessLogGenerator.write_entry = write_entry
WebSocketProtocol.serverClose = server_close
Server.kill_all_applications = kill_all_applications
WebSocketFactory.__init__ = factory_init
Server.handle_reply = handle_reply

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
