"""The test pages of seed 002: templates only, every action happens in the browser."""

from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def ws_test_page(request):
    """A page that holds a WebSocket to `/ws/` and pushes through the HTTP API."""
    return render(request, "bridge/ws_test.html")


@require_safe
def sse_test_page(request):
    """A page that holds an EventSource on `/events/` and pushes through the HTTP API."""
    return render(request, "bridge/sse_test.html")
