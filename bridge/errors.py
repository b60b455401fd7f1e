"""One error vocabulary for every transport.

Each error carries its contract `code`, the HTTP status it maps to and, where
it ends a WebSocket, the close code. HTTP bodies and WebSocket `error` frames
render the same code.
"""


class BridgeError(Exception):
    code = "error"
    http_status = 400
    close_code: int | None = None
    default_message = "Bad request."

    def __init__(self, message: str | None = None, *, fields: dict | None = None):
        self.message = message or self.default_message
        self.fields = fields
        # The client's request_id, echoed in the error frame when known.
        self.request_id = None
        super().__init__(self.message)

    def as_frame(self) -> dict:
        frame = {"type": "error", "code": self.code, "message": self.message}
        if self.fields:
            frame["fields"] = self.fields
        if self.request_id is not None:
            frame["request_id"] = self.request_id
        return frame

    def as_body(self) -> dict:
        body = {"error": self.code, "detail": self.message}
        if self.fields:
            body["fields"] = self.fields
        return body


class InvalidJSON(BridgeError):
    code = "invalid_json"
    default_message = "The body is not valid JSON."


class Validation(BridgeError):
    code = "validation"
    http_status = 422
    default_message = "The request is not valid."


class UnknownAction(BridgeError):
    code = "unknown_action"
    default_message = "Unknown action."


class UnsupportedFrame(BridgeError):
    code = "unsupported_frame"
    default_message = "Binary frames are not supported: send JSON as text."


class TooLarge(BridgeError):
    code = "too_large"
    http_status = 413
    close_code = 1009
    default_message = "Too large."


class NotAuthenticated(BridgeError):
    code = "not_authenticated"
    http_status = 401
    close_code = 4401
    default_message = "Authentication is required."


class Forbidden(BridgeError):
    code = "forbidden"
    http_status = 403
    close_code = 4403
    default_message = "Not allowed."


class ForbiddenAction(Forbidden):
    """One action refused; the connection stays."""

    close_code = None


class NotFound(BridgeError):
    code = "not_found"
    http_status = 404
    default_message = "Not found."


class DuplicateConnection(BridgeError):
    code = "duplicate_connection"
    http_status = 409
    close_code = 1008
    default_message = "This user is already connected."


class Replaced(BridgeError):
    code = "replaced"
    http_status = 409
    close_code = 1008
    default_message = "A newer connection of this user replaced this one."


class UnknownCorrelation(BridgeError):
    code = "unknown_correlation"
    http_status = 404
    default_message = "Nobody waits for replies with this correlation id."


class Conflict(BridgeError):
    code = "conflict"
    http_status = 409
    default_message = "A send with this correlation id is still waiting for replies."


class Unavailable(BridgeError):
    code = "unavailable"
    http_status = 503
    close_code = 1011
    default_message = "The gateway cannot reach its storage right now; try again."


class NotConfigured(BridgeError):
    """A feature this deployment has no settings for: retrying will not help."""

    code = "not_configured"
    http_status = 503
    default_message = "This gateway is not configured for that."


class SlowConsumer(BridgeError):
    code = "slow_consumer"
    http_status = 503
    close_code = 1013
    default_message = "Too many undelivered frames: reconnect with `since`."


class TooManyConnections(BridgeError):
    code = "too_many_connections"
    http_status = 503
    close_code = 1013
    default_message = "This server holds as many connections as it may; try again later."


class TooManyUserConnections(BridgeError):
    code = "too_many_connections"
    http_status = 429
    close_code = 4429
    default_message = "This user has as many live connections as allowed; close one first."


class RateLimited(BridgeError):
    code = "rate_limited"
    http_status = 429
    close_code = 4429
    default_message = "Too many frames: slow down and reconnect."


class HeartbeatTimeout(BridgeError):
    code = "heartbeat_timeout"
    http_status = 408
    close_code = 4408
    default_message = "No frame answered the server's pings: reconnect with `since`."


class ServerShutdown(BridgeError):
    code = "server_shutdown"
    http_status = 503
    close_code = 1001
    default_message = "This server is shutting down: reconnect (with `since`) to another."


class ClosedByAdmin(BridgeError):
    code = "closed_by_admin"
    http_status = 409
    close_code = 4000
    default_message = "An operator closed this connection."


class ServerClosed(BridgeError):
    """The application closed it: a connect callback's `close`, or /internal/send."""

    code = "server_closed"
    http_status = 409
    close_code = 4000
    default_message = "The server closed this connection."
