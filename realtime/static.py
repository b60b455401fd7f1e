"""Static files (the admin's) served by WhiteNoise in front of Django.

WhiteNoise's Django middleware is synchronous, so under ASGI it would cost
every request a thread hop; routing only STATIC_URL to it keeps the API path
free of that.
"""

from asgiref.wsgi import WsgiToAsgi
from django.conf import settings
from whitenoise import WhiteNoise


def _not_found(environ, start_response):
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"Not found"]


def static_or(app):
    prefix = "/" + settings.STATIC_URL.strip("/") + "/"
    static = WsgiToAsgi(
        WhiteNoise(_not_found, root=settings.STATIC_ROOT, prefix=prefix, autorefresh=settings.DEBUG)
    )

    async def router(scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(prefix):
            return await static(scope, receive, send)
        return await app(scope, receive, send)

    return router
