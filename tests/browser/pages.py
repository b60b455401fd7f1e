"""Driving the test pages (`/ws/test-page`, `/sse/test`) from tests.

Both pages share the push form and the log: every received frame or event
is an `li.log-entry` with `data-type`, `data-id`, `data-event` (SSE event
name), `data-last-event-id`, `data-channel`, and its data as JSON text.
"""

import orjson
from playwright.sync_api import Page, expect

# Bound on every wait of a browser action or assertion (milliseconds).
BROWSER_TIMEOUT_MS = 10_000
_READ_LOG = """entries => entries.map(e => ({
    type: e.dataset.type, id: e.dataset.id ?? null, event: e.dataset.event ?? null,
    event_type: e.dataset.eventType ?? null, channel: e.dataset.channel ?? null,
    last_event_id: e.dataset.lastEventId ?? null,
    data: e.querySelector("[data-field=data]").textContent,
}))"""


def log_entries(page: Page, selector: str = "") -> list[dict]:
    """The log, oldest first: each entry's attributes and decoded data."""
    entries = page.eval_on_selector_all(f"#log .log-entry{selector}", _READ_LOG)
    return [{**entry, "data": orjson.loads(entry["data"])} for entry in entries]


def messages(page: Page) -> list[dict]:
    """The `message` entries of the log, oldest first."""
    return log_entries(page, '[data-type="message"]')


def wait_for_entry(page: Page, message_id: str, timeout: float = BROWSER_TIMEOUT_MS) -> dict:
    """Wait until the message `message_id` is in the log, exactly once; return it.

    (An `ack` names the id it acknowledges too: only `message` entries count.)
    """
    selector = f'[data-type="message"][data-id="{message_id}"]'
    expect(page.locator(f"#log .log-entry{selector}")).to_have_count(1, timeout=timeout)
    (entry,) = log_entries(page, selector)
    return entry


def push_with_form(
    page: Page, *, target: str, to: str = "", data=None, event_type: str = ""
) -> dict:
    """Push through the page's form (`fetch` POST /api/v1/push); return the receipt.

    `target` is `user_id`, `channel` or `broadcast`.
    """
    page.select_option("#push-target", target)
    if target != "broadcast":
        page.fill("#push-to", to)
    page.fill("#push-event-type", event_type)
    page.fill("#push-data", orjson.dumps(data).decode())
    receipts = page.locator("#push-receipts .push-receipt")
    before = receipts.count()
    page.click("#push-send")
    receipt = receipts.nth(before)
    expect(receipt).not_to_have_attribute("data-state", "pending")
    expect(receipt).to_have_attribute("data-status", "202")
    return orjson.loads(receipt.text_content().removeprefix("202 "))


def open_sse_page(page: Page, gateway, user: str, *, channels=(), listen: str = "") -> dict:
    """Open `/sse/test` on `gateway`, connect as `user`; return the welcome."""
    page.goto(f"{gateway.http}/sse/test")
    page.fill("#user-id", user)
    page.fill("#channels", ", ".join(channels))
    page.fill("#listen", listen)
    page.click("#connect")
    expect(page.locator("#state")).to_have_attribute("data-state", "open")
    welcomes = page.locator('#log .log-entry[data-type="welcome"]')
    expect(welcomes).to_have_count(1)
    assert log_entries(page, '[data-type="welcome"]')[0]["event"] == "welcome"
    return orjson.loads(page.text_content("#welcome"))
