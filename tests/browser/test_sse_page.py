"""`/sse/test` in Chromium: an EventSource on `/events/`, driven by hand."""

import httpx
from playwright.sync_api import expect

from tests.browser.pages import (
    log_entries,
    messages,
    open_sse_page,
    push_with_form,
    wait_for_entry,
)


def push(gateway, **body) -> dict:
    """POST /api/v1/push from the test itself; it must be accepted."""
    response = httpx.post(f"{gateway.http}/api/v1/push", json=body, timeout=10)
    assert response.status_code == 202, response.text
    return response.json()


def test_page_is_plain_html(gateway):
    response = httpx.get(f"{gateway.http}/sse/test")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "EventSource" in httpx.get(f"{gateway.http}/static/bridge/sse-test.js").text


def test_welcome_then_each_push_exactly_once(page, gateway, unique):
    user, news, alerts = unique("sse-page"), unique("news"), unique("alerts")
    welcome = open_sse_page(page, gateway, user, channels=(news, alerts), listen="alert")
    assert welcome["type"] == "welcome"
    assert welcome["user"] == user
    assert welcome["transport"] == "sse"
    assert sorted(welcome["channels"]) == sorted([news, alerts])
    assert welcome["connection_id"]
    expect(page.locator("#welcome")).to_contain_text(user)

    expected = []
    # Through the page's push form: to the user, then to a subscribed channel.
    receipt = push_with_form(page, target="user_id", to=user, data={"n": 1})
    assert receipt["delivered"] == 1
    entry = wait_for_entry(page, receipt["id"])
    assert (entry["event"], entry["event_type"], entry["channel"]) == ("message", "message", None)
    assert entry["data"] == {"n": 1}
    expected.append(receipt["id"])

    receipt = push_with_form(page, target="channel", to=news, data={"n": 2})
    entry = wait_for_entry(page, receipt["id"])
    assert (entry["event"], entry["channel"], entry["data"]) == ("message", news, {"n": 2})
    expected.append(receipt["id"])

    # From outside the page, over HTTP: to the user and to the other channel.
    receipt = push(gateway, user_id=user, data={"n": 3})
    assert wait_for_entry(page, receipt["id"])["data"] == {"n": 3}
    expected.append(receipt["id"])
    receipt = push(gateway, channel=alerts, data={"n": 4})
    assert wait_for_entry(page, receipt["id"])["channel"] == alerts
    expected.append(receipt["id"])

    # A custom event type typed in the push form is listened for before the push.
    receipt = push_with_form(page, target="user_id", to=user, data={"n": 5}, event_type="notify")
    entry = wait_for_entry(page, receipt["id"])
    assert (entry["event"], entry["event_type"]) == ("notify", "notify")
    expected.append(receipt["id"])

    # One named in "event types to listen for" arrives under its name ...
    receipt = push(gateway, channel=news, data={"n": 6}, event_type="alert")
    entry = wait_for_entry(page, receipt["id"])
    assert (entry["event"], entry["event_type"], entry["channel"]) == ("alert", "alert", news)
    expected.append(receipt["id"])
    # ... and one nobody listens for is not dispatched at all: the stream names
    # each event by its event_type, not `message`.
    unheard = push(gateway, user_id=user, data={"n": 7}, event_type="unheard")
    receipt = push(gateway, user_id=user, data={"n": 8})
    wait_for_entry(page, receipt["id"])
    expected.append(receipt["id"])

    found = messages(page)
    assert [m["id"] for m in found] == expected
    assert unheard["id"] not in {m["id"] for m in found}
    # Every event carries a resume token, each one different.
    tokens = [m["last_event_id"] for m in found]
    assert all(tokens)
    assert len(set(tokens)) == len(tokens)
    assert [e["type"] for e in log_entries(page)] == ["welcome"] + ["message"] * len(expected)
    expect(page.locator("#state")).to_have_attribute("data-state", "open")
    expect(page.locator("#source-count")).to_have_text("1")
    expect(page.locator("#open-count")).to_have_text("1")


def test_disconnect_closes_the_stream(page, gateway, unique):
    user = unique("sse-page")
    open_sse_page(page, gateway, user)
    page.click("#disconnect")
    expect(page.locator("#state")).to_have_attribute("data-state", "closed")
    # Closed: a push is stored for later, not shown.
    receipt = push_with_form(page, target="user_id", to=user, data={"late": True})
    assert receipt["stored"] is True
    assert messages(page) == []


def test_a_refused_stream_shows_closed(page, gateway):
    """An invalid channel gets an HTTP error, which an EventSource does not retry."""
    page.goto(f"{gateway.http}/sse/test")
    page.fill("#user-id", "someone")
    page.fill("#channels", "not a channel!")
    page.click("#connect")
    expect(page.locator("#state")).to_have_attribute("data-state", "closed")
    expect(page.locator("#open-count")).to_have_text("0")


def test_an_error_event_is_logged_and_the_browser_retries(page, gateway):
    """The gateway ends a stream with `event: error`: the page logs it, and
    the browser reconnects the same EventSource (here to a stubbed stream)."""
    stream = (
        "retry: 200\n\n"
        'event: welcome\ndata: {"type":"welcome","user":"stub","transport":"sse"}\n\n'
        'event: error\ndata: {"type":"error","code":"slow_consumer","message":"bye"}\n\n'
    )
    page.route(
        "**/events/**",
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=stream
        ),
    )
    page.goto(f"{gateway.http}/sse/test")
    page.fill("#user-id", "stub")
    page.click("#connect")
    errors = page.locator('#log .log-entry[data-type="error"]')
    expect(errors.first).to_be_attached()
    (error, *_) = log_entries(page, '[data-type="error"]')
    assert error["event"] == "error"
    assert error["data"] == {"code": "slow_consumer", "message": "bye"}
    # Each stubbed stream ends at once: the browser keeps reconnecting the one
    # EventSource, which welcomes again every time.
    expect(page.locator('#log .log-entry[data-type="welcome"]').nth(2)).to_be_attached()
    expect(page.locator("#source-count")).to_have_text("1")
