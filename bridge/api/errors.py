"""The HTTP face of the error vocabulary: `{"error", "detail", "fields"}`."""

import logging
from http import HTTPStatus

from django.core.exceptions import RequestDataTooBig
from django.http import Http404
from rest_framework import exceptions
from rest_framework.response import Response

from ..errors import BridgeError, InvalidJSON, NotFound, TooLarge, Validation

log = logging.getLogger(__name__)

CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "not_authenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
}


def exception_handler(exc, context):
    """Render every API error in the contract's shape; unknown ones stay 500s."""
    if isinstance(exc, RequestDataTooBig):
        exc = TooLarge(str(exc))
    elif isinstance(exc, Http404):
        exc = NotFound(str(exc) or None)
    elif isinstance(exc, exceptions.ParseError):
        exc = InvalidJSON(str(exc.detail))
    elif isinstance(exc, exceptions.ValidationError):
        exc = Validation(_summary(exc.detail), fields=_fields(exc.detail))
    if isinstance(exc, BridgeError):
        return Response(exc.as_body(), status=exc.http_status)
    if isinstance(exc, exceptions.APIException):
        headers = {}
        if getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(exc.wait))
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        code = CODES.get(type(exc), exc.default_code)
        return Response({"error": code, "detail": exc.detail}, exc.status_code, headers=headers)
    log.exception("unhandled API error", exc_info=exc)
    return Response(
        {"error": "internal_error", "detail": "Internal error."},
        status=HTTPStatus.INTERNAL_SERVER_ERROR,
    )


def _fields(detail):
    if isinstance(detail, dict):
        return detail
    return {"non_field_errors": detail if isinstance(detail, list) else [detail]}


def _summary(detail) -> str:
    if isinstance(detail, dict) and list(detail) == ["non_field_errors"]:
        return str(detail["non_field_errors"][0])
    if isinstance(detail, list) and detail and not isinstance(detail[0], (dict, list)):
        return str(detail[0])
    return "The request is not valid: see `fields`."
