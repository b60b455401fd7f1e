"""`/ws/test-page` in Chromium: a WebSocket of the gateway, driven by hand."""

import httpx
import orjson
from playwright.sync_api import expect

from tests.browser.pages import log_entries, messages, push_with_form, wait_for_entry


def open_ws_page(page, gateway, user: str) -> dict:
    """Open the page, connect as `user`; return the welcome frame."""
    page.goto(f"{gateway.http}/ws/test-page")
    page.fill("#user-id", user)
    page.click("#connect")
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    expect(page.locator('#log .log-entry[data-type="welcome"]')).to_have_count(1)
    return orjson.loads(page.text_content("#welcome"))


def test_page_is_plain_html(gateway):
    response = httpx.get(f"{gateway.http}/ws/test-page")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="log"' in response.text
    assert httpx.post(f"{gateway.http}/ws/test-page").status_code == 405


def test_connect_subscribe_push_publish_send(page, gateway, unique):
    user, channel = unique("ws-page"), unique("news")
    welcome = open_ws_page(page, gateway, user)
    assert welcome["type"] == "welcome"
    assert welcome["user"] == user
    assert welcome["transport"] == "websocket"
    assert welcome["connection_id"]
    expect(page.locator("#welcome")).to_contain_text(user)

    # Subscribe with the page's frame.
    page.fill("#channel", channel)
    page.click("#subscribe")
    expect(page.locator('#log .log-entry[data-type="subscribed"]')).to_have_count(1)
    expect(page.locator("#subscriptions")).to_have_text(channel)

    # The page's HTTP push form, to the channel and to the user.
    to_channel = push_with_form(page, target="channel", to=channel, data={"n": 1})
    assert to_channel["delivered"] == 1
    entry = wait_for_entry(page, to_channel["id"])
    assert entry["channel"] == channel
    assert entry["event_type"] == "message"
    assert entry["data"] == {"n": 1}

    to_user = push_with_form(page, target="user_id", to=user, data={"n": 2}, event_type="alert")
    assert to_user == {"id": to_user["id"], "delivered": 1, "online": True, "stored": False}
    entry = wait_for_entry(page, to_user["id"])
    assert entry["channel"] is None
    assert entry["event_type"] == "alert"
    assert entry["data"] == {"n": 2}

    # Publish over the socket: the publisher is subscribed, so it gets it too,
    # then the ack with the same id.
    page.fill("#publish-channel", channel)
    page.fill("#publish-event-type", "chat")
    page.fill("#publish-data", '{"text": "hi all"}')
    page.click("#publish")
    expect(page.locator('#log .log-entry[data-type="ack"]')).to_have_count(1)
    (ack,) = log_entries(page, '[data-type="ack"]')
    published = wait_for_entry(page, ack["data"]["id"])
    assert published["channel"] == channel
    assert published["event_type"] == "chat"
    assert published["data"] == {"text": "hi all"}
    assert ack["data"]["action"] == "publish"

    # Send a personal message to oneself over the socket; plain text is sent as a string.
    page.fill("#send-to", user)
    page.fill("#send-data", "hello me")
    page.click("#send")
    expect(page.locator('#log .log-entry[data-type="ack"]')).to_have_count(2)
    sent = wait_for_entry(page, log_entries(page, '[data-type="ack"]')[1]["data"]["id"])
    assert sent["data"] == "hello me"
    assert sent["channel"] is None

    # A push from outside the page arrives as well.
    outside = httpx.post(
        f"{gateway.http}/api/v1/push", json={"user_id": user, "data": {"n": 3}}
    ).json()
    wait_for_entry(page, outside["id"])

    # Unsubscribed, the page gets no more of the channel.
    page.click("#unsubscribe")
    expect(page.locator('#log .log-entry[data-type="unsubscribed"]')).to_have_count(1)
    expect(page.locator("#subscriptions")).to_have_text("none")
    after = push_with_form(page, target="channel", to=channel, data={"n": 4})
    assert after["delivered"] == 0
    marker = push_with_form(page, target="user_id", to=user, data={"n": 5})
    wait_for_entry(page, marker["id"])

    ids = [m["id"] for m in messages(page)]
    assert ids == [
        to_channel["id"],
        to_user["id"],
        published["id"],
        sent["id"],
        outside["id"],
        marker["id"],
    ]
    expect(page.locator("#log-count")).to_have_text(str(page.locator("#log .log-entry").count()))


def test_bad_frame_shows_the_error_and_keeps_the_socket(page, gateway, unique):
    user = unique("ws-page")
    open_ws_page(page, gateway, user)
    page.fill("#publish-channel", "no spaces allowed")
    page.click("#publish")
    expect(page.locator('#log .log-entry[data-type="error"]')).to_have_count(1)
    (error,) = log_entries(page, '[data-type="error"]')
    assert error["data"]["code"] == "validation"
    expect(page.locator("#status")).to_have_attribute("data-state", "open")
    receipt = push_with_form(page, target="user_id", to=user, data={"still": "here"})
    wait_for_entry(page, receipt["id"])


def test_disconnect_shows_the_close_code(page, gateway, unique):
    open_ws_page(page, gateway, unique("ws-page"))
    page.click("#disconnect")
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")
    expect(page.locator("#status")).to_have_attribute("data-close-code", "1000")
