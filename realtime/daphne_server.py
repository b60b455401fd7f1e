"""Daphne, started with the close codes the gateway's contract uses.

Autobahn, under Daphne, lets an application close a socket only with 1000 or
3000-4999, and turns anything else into an error and a 1011. RFC 6455 lets a
server send 1001, 1008, 1009, 1011, 1013 too, and clients of the gateway rely
on them (1008 duplicate, 1009 too large, 1013 slow consumer), so this
launcher sends those as they are, and has Autobahn close a connection it
fails (a frame over Daphne's cap) with its code rather than dropping it.
Everything else is Daphne's own CLI.
"""

from daphne.cli import CommandLineInterface
from daphne.ws_protocol import WebSocketFactory, WebSocketProtocol

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


WebSocketProtocol.serverClose = server_close
WebSocketFactory.__init__ = factory_init

if __name__ == "__main__":
    CommandLineInterface.entrypoint()
