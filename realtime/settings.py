"""Every setting of the gateway, read from the environment in this one place.

Defaults suit development on one machine (SQLite, everything in memory);
production secrets have no default.
"""

import re
from pathlib import Path

import environ
from corsheaders.defaults import default_headers as default_cors_headers
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if (BASE_DIR / ".env").exists():
    environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=False)

SECRET_KEY = env.str("SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured("SECRET_KEY must be set when DEBUG is false.")
    SECRET_KEY = "dev-only-insecure-secret-key"  # noqa: S105 (development default)

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["*"] if DEBUG else ["localhost", "127.0.0.1"])
# Browser origins allowed on WebSocket handshakes and event streams, and given
# CORS headers by the API and the streams.
# Patterns as Channels' OriginValidator reads them: "*", "example.com",
# ".example.com", "https://example.com:8443". A client without an Origin header
# (wscat, curl, server-side clients) is not a browser and is let through.
ALLOWED_ORIGINS = env.list("ALLOWED_ORIGINS", default=["*"] if DEBUG else ALLOWED_HOSTS)

# --- Authentication -------------------------------------------------------------
# Each transport asks who is connecting unless switched off (seed 000's trusted
# `?user_id=`); on by default unless DEBUG.
WEBSOCKET_AUTH_REQUIRED = env.bool("WEBSOCKET_AUTH_REQUIRED", default=not DEBUG)
SSE_AUTH_REQUIRED = env.bool("SSE_AUTH_REQUIRED", default=not DEBUG)
API_AUTH_REQUIRED = env.bool("API_AUTH_REQUIRED", default=not DEBUG)
# Connection tokens: HS256 with JWT_SECRET and/or RS256 with JWT_PUBLIC_KEY
# (PEM); JWT_PRIVATE_KEY (PEM) signs minted tokens with RS256 instead of HS256.
JWT_SECRET = env.str("JWT_SECRET", default="")
# When set, the only algorithm accepted (and used to mint): HS256/384/512 with
# JWT_SECRET, RS256/384/512, PS256/384/512 or ES256/384/512 with the key pair.
JWT_ALGORITHM = env.str("JWT_ALGORITHM", default="")
JWT_PUBLIC_KEY = env.str("JWT_PUBLIC_KEY", default="", multiline=True)
JWT_PRIVATE_KEY = env.str("JWT_PRIVATE_KEY", default="", multiline=True)
JWT_AUDIENCE = env.str("JWT_AUDIENCE", default="")
JWT_ISSUER = env.str("JWT_ISSUER", default="")
JWT_LEEWAY = env.int("JWT_LEEWAY", default=0)  # seconds of clock skew tolerated
JWT_TTL = env.int("JWT_TTL", default=3600)  # lifetime of a minted token, seconds
# Failed authentications one client address may make per window (seconds)
# before it is refused (4429 / HTTP 429) until the window ends.
AUTH_FAILURE_LIMIT = env.int("AUTH_FAILURE_LIMIT", default=20)
AUTH_FAILURE_WINDOW = env.int("AUTH_FAILURE_WINDOW", default=60)
# HTTP API requests per second per API key (or per client address without
# one), with bursts of API_RATE_BURST; past it 429 with Retry-After.
API_RATE_LIMIT = env.float("API_RATE_LIMIT", default=1000.0)
API_RATE_BURST = env.int("API_RATE_BURST", default=2000)
# Connection callbacks (docs/callbacks.md): every WebSocket and SSE connect
# is POSTed to this URL after authentication, before the connection goes
# live; a non-2xx answer refuses it, and disconnects are POSTed too. Empty:
# no callbacks. CALLBACK_URL (seed 001's name) is read when it is unset.
CONNECT_CALLBACK_URL = env.str("CONNECT_CALLBACK_URL", default="") or env.str(
    "CALLBACK_URL", default=""
)
# Seconds a callback may take in all; past them it counts as failed.
CALLBACK_TIMEOUT = env.float("CALLBACK_TIMEOUT", default=5.0)
# A connect callback that fails (timeout, no answer) refuses the connection,
# unless this is true: then the connection opens as if callbacks were off.
CALLBACK_FAIL_OPEN = env.bool("CALLBACK_FAIL_OPEN", default=False)

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "corsheaders",
    "rest_framework",
    "drf_spectacular",
    "channels",
    # For AbstractAPIKey (accounts.ApiKey); its own APIKey model stays unused.
    "rest_framework_api_key",
    "accounts",
    "bridge",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# The API, the push aliases and /health, /ready, /metrics run with only these
# (async-native) middleware: see realtime/handlers.py. The admin gets MIDDLEWARE.
API_MIDDLEWARE = ["realtime.handlers.BrowserCorsMiddleware"]
FULL_STACK_PATHS = ("/admin/",)

ROOT_URLCONF = "realtime.urls"
ASGI_APPLICATION = "realtime.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = env.path("STATIC_ROOT", default=BASE_DIR / "staticfiles")

# --- The cross-process bus ---------------------------------------------------
# Unset: one process, everything in memory. Set: processes sharing this Redis
# form one gateway (history, registry, fan-out and control messages live
# there). No Channels layer is configured: nothing goes through one
# (docs/decisions.md, "No channel layer").
REDIS_URL = env.str("REDIS_URL", default="")
# Every Redis key and pub/sub channel of the gateway starts with this, so
# several gateways (or test runs) can share one Redis server.
REDIS_PREFIX = env.str("REDIS_PREFIX", default="rt")
# Connections each process keeps to Redis for history, registry and the bus.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=50)

# --- Gateway behaviour (CONTRACT sections 3, 8, 8b) ------------------------
# Public accounts created at start-up besides ci_bot, email_bot,
# notification_bot and system_bot (which every database has).
PUBLIC_ACCOUNTS = env.list("PUBLIC_ACCOUNTS", default=[])
HISTORY_SIZE = env.int("HISTORY_SIZE", default=1000)
HISTORY_TTL = env.int("HISTORY_TTL", default=24 * 3600)
BATCH_MAX = env.int("BATCH_MAX", default=1000)
MAX_BODY_BYTES = env.int("MAX_BODY_BYTES", default=1024 * 1024)
WEBSOCKET_MAX_FRAME_BYTES = env.int("WEBSOCKET_MAX_FRAME_BYTES", default=1024 * 1024)
WEBSOCKET_HEARTBEAT_INTERVAL = env.int("WEBSOCKET_HEARTBEAT_INTERVAL", default=30)
# A WebSocket that answers none of this many consecutive server pings (no
# frame at all in between) is closed with 4408 (heartbeat_timeout).
WEBSOCKET_MAX_MISSED_PONGS = env.int("WEBSOCKET_MAX_MISSED_PONGS", default=3)
# Client frames per second each WebSocket may send, with bursts of up to
# WEBSOCKET_RATE_BURST; past it: rate_limited, closed with 4429.
WEBSOCKET_RATE_LIMIT = env.float("WEBSOCKET_RATE_LIMIT", default=100.0)
WEBSOCKET_RATE_BURST = env.int("WEBSOCKET_RATE_BURST", default=200)
# Live connections (WebSocket and SSE) of one principal across the gateway;
# past it a new one is refused (4429 / HTTP 429, too_many_connections).
MAX_CONNECTIONS_PER_USER = env.int("MAX_CONNECTIONS_PER_USER", default=100)
# Seconds a process stopping on SIGTERM gives its clients to take their close.
SHUTDOWN_GRACE = env.float("SHUTDOWN_GRACE", default=2.0)
WS_DUPLICATE_POLICY = env.str("WS_DUPLICATE_POLICY", default="allow")
MAX_SUBSCRIPTIONS = env.int("MAX_SUBSCRIPTIONS", default=128)
# Presence join and leave events go out while a channel has at most this many
# members (a crowd of N joining costs N frames, not N squared); the presence
# query answers at any size.
PRESENCE_MAX_MEMBERS = env.int("PRESENCE_MAX_MEMBERS", default=100)
# Connections one process accepts, per transport; past them a WebSocket is
# closed with 1013 and an event stream answered 503 (try again later).
WEBSOCKET_MAX_CONNECTIONS = env.int("WEBSOCKET_MAX_CONNECTIONS", default=10000)
SSE_MAX_CONNECTIONS = env.int("SSE_MAX_CONNECTIONS", default=10000)
# Send-with-reply: how long a sender waits for replies (seconds).
SEND_TIMEOUT_DEFAULT = env.int("SEND_TIMEOUT_DEFAULT", default=30)
SEND_TIMEOUT_MAX = env.int("SEND_TIMEOUT_MAX", default=300)
SSE_HEARTBEAT_INTERVAL = env.int("SSE_HEARTBEAT_INTERVAL", default=15)
# The `retry:` hint of SSE streams: milliseconds a browser waits to reconnect.
SSE_RETRY_TIMEOUT = env.int("SSE_RETRY_TIMEOUT", default=3000)
# Frames a connection may have queued while its socket does not drain;
# past this it is closed with 1013 (an SSE stream ends) and recovers with
# `since` (`Last-Event-ID`).
WEBSOCKET_SEND_QUEUE = env.int("WEBSOCKET_SEND_QUEUE", default=1000)
SSE_SEND_QUEUE = env.int("SSE_SEND_QUEUE", default=1000)
# Which streams an SSE request reads, and who may read them (django-eventstream's hook).
EVENTSTREAM_CHANNELMANAGER_CLASS = env.str(
    "EVENTSTREAM_CHANNELMANAGER_CLASS", default="bridge.sse.GatewayChannelManager"
)

for _name, _value in {
    "HISTORY_SIZE": HISTORY_SIZE,
    "HISTORY_TTL": HISTORY_TTL,
    "BATCH_MAX": BATCH_MAX,
    "MAX_BODY_BYTES": MAX_BODY_BYTES,
    "WEBSOCKET_MAX_FRAME_BYTES": WEBSOCKET_MAX_FRAME_BYTES,
    "WEBSOCKET_SEND_QUEUE": WEBSOCKET_SEND_QUEUE,
    "MAX_SUBSCRIPTIONS": MAX_SUBSCRIPTIONS,
    "PRESENCE_MAX_MEMBERS": PRESENCE_MAX_MEMBERS,
    "SEND_TIMEOUT_DEFAULT": SEND_TIMEOUT_DEFAULT,
    "SEND_TIMEOUT_MAX": SEND_TIMEOUT_MAX,
    "SSE_HEARTBEAT_INTERVAL": SSE_HEARTBEAT_INTERVAL,
    "SSE_RETRY_TIMEOUT": SSE_RETRY_TIMEOUT,
    "SSE_SEND_QUEUE": SSE_SEND_QUEUE,
    "WEBSOCKET_MAX_CONNECTIONS": WEBSOCKET_MAX_CONNECTIONS,
    "SSE_MAX_CONNECTIONS": SSE_MAX_CONNECTIONS,
    "WEBSOCKET_HEARTBEAT_INTERVAL": WEBSOCKET_HEARTBEAT_INTERVAL,
    "WEBSOCKET_MAX_MISSED_PONGS": WEBSOCKET_MAX_MISSED_PONGS,
    "WEBSOCKET_RATE_BURST": WEBSOCKET_RATE_BURST,
    "MAX_CONNECTIONS_PER_USER": MAX_CONNECTIONS_PER_USER,
    "JWT_TTL": JWT_TTL,
    "AUTH_FAILURE_LIMIT": AUTH_FAILURE_LIMIT,
    "AUTH_FAILURE_WINDOW": AUTH_FAILURE_WINDOW,
    "API_RATE_BURST": API_RATE_BURST,
}.items():
    if _value < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, got {_value}.")
if WEBSOCKET_RATE_LIMIT <= 0:
    raise ImproperlyConfigured(f"WEBSOCKET_RATE_LIMIT must be above 0, got {WEBSOCKET_RATE_LIMIT}.")
if API_RATE_LIMIT <= 0:
    raise ImproperlyConfigured(f"API_RATE_LIMIT must be above 0, got {API_RATE_LIMIT}.")
JWT_ALGORITHMS = {
    f"{family}{bits}" for family in ("HS", "RS", "PS", "ES") for bits in (256, 384, 512)
}
if JWT_ALGORITHM and JWT_ALGORITHM not in JWT_ALGORITHMS:
    raise ImproperlyConfigured(
        f"JWT_ALGORITHM must be one of {', '.join(sorted(JWT_ALGORITHMS))}, got {JWT_ALGORITHM!r}."
    )
if JWT_LEEWAY < 0:
    raise ImproperlyConfigured(f"JWT_LEEWAY must not be negative, got {JWT_LEEWAY}.")
if CALLBACK_TIMEOUT <= 0:
    raise ImproperlyConfigured(f"CALLBACK_TIMEOUT must be above 0, got {CALLBACK_TIMEOUT}.")
if CONNECT_CALLBACK_URL and not re.match(r"https?://[^/?#]+", CONNECT_CALLBACK_URL):
    raise ImproperlyConfigured("CONNECT_CALLBACK_URL must be an http:// or https:// URL.")
if SHUTDOWN_GRACE < 0:
    raise ImproperlyConfigured(f"SHUTDOWN_GRACE must not be negative, got {SHUTDOWN_GRACE}.")
if WS_DUPLICATE_POLICY not in {"allow", "reject", "replace"}:
    raise ImproperlyConfigured(
        f"WS_DUPLICATE_POLICY must be allow, reject or replace, got {WS_DUPLICATE_POLICY!r}."
    )

# Django's own guard, for any view that reads request.body.
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_BODY_BYTES

# --- HTTP API ----------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_PARSER_CLASSES": ["bridge.api.codec.ORJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["bridge.api.codec.ORJSONRenderer"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_THROTTLE_CLASSES": ["bridge.api.throttles.ClientRateThrottle"],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "bridge.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Realtime gateway API",
    "DESCRIPTION": "Push to users, channels and everyone; see docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
}

# CORS for the API from the same ALLOWED_ORIGINS: full origins as they are,
# bare domains ("example.com", ".example.com" with its subdomains) on any
# scheme and port, as the WebSocket check reads them.
CORS_ALLOWED_ORIGINS = [o for o in ALLOWED_ORIGINS if "://" in o]
CORS_ALLOWED_ORIGIN_REGEXES = [
    rf"^[a-z][a-z0-9+.-]*://{'([^/]+[.])?' if o.startswith('.') else ''}"
    rf"{re.escape(o.lstrip('.'))}(:[0-9]+)?$"
    for o in ALLOWED_ORIGINS
    if "://" not in o and o != "*"
]
CORS_ALLOW_ALL_ORIGINS = "*" in ALLOWED_ORIGINS
CORS_ALLOW_HEADERS = (*default_cors_headers, "x-api-key", "last-event-id")

# --- Logging -----------------------------------------------------------------
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}
