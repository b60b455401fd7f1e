"""The SSE page's EventSource survives the death of its gateway process.

Two processes on Redis; the page reads its stream from A. A is killed
(SIGKILL: no goodbye to anyone), messages are pushed through B while the
browser retries, A comes back on the same port, and the browser's own
reconnect (same EventSource, `Last-Event-ID`) gets every missed message
exactly once, in order.
"""

import signal

import httpx
from playwright.sync_api import expect

from tests.browser.pages import log_entries, messages, open_sse_page, push_with_form
from tests.servers import gateway_cluster, restart_gateway

# The `retry:` hint, in milliseconds: how soon the browser tries again.
RETRY_MS = "500"


def test_event_source_resumes_after_its_process_is_killed(page, tmp_path, unique):
    user = unique("sse-resume")
    with gateway_cluster(tmp_path, SSE_RETRY_TIMEOUT=RETRY_MS) as (a, b):
        open_sse_page(page, a, user)
        page.evaluate("window.sameDocument = true")
        sent = []
        for n in (1, 2, 3):  # through A's HTTP API, with the page's form
            receipt = push_with_form(page, target="user_id", to=user, data={"m": n})
            sent.append(receipt["id"])
        expect(page.locator('#log .log-entry[data-type="message"]')).to_have_count(3)

        a.stop(signal.SIGKILL)
        expect(page.locator("#state")).to_have_attribute("data-state", "reconnecting")
        for n in (4, 5, 6):  # through B, while the page has no stream
            response = httpx.post(
                f"{b.http}/api/v1/push", json={"user_id": user, "data": {"m": n}}, timeout=10
            )
            assert response.status_code == 202, response.text
            sent.append(response.json()["id"])

        restart_gateway(a)
        expect(page.locator("#state")).to_have_attribute("data-state", "open", timeout=15_000)
        expect(page.locator('#log .log-entry[data-type="message"]')).to_have_count(6)
        receipt = push_with_form(page, target="user_id", to=user, data={"m": 7})
        sent.append(receipt["id"])
        expect(page.locator('#log .log-entry[data-type="message"]')).to_have_count(7)
        page.wait_for_timeout(500)  # room for a late duplicate to show

        found = messages(page)
        assert [m["data"] for m in found] == [{"m": n} for n in range(1, 8)]
        assert [m["id"] for m in found] == sent
        # The browser reconnected the same EventSource by itself: no reload,
        # no second EventSource, a second `open` and a second welcome that
        # counts the replayed messages.
        assert page.evaluate("window.sameDocument") is True
        expect(page.locator("#source-count")).to_have_text("1")
        expect(page.locator("#open-count")).to_have_text("2")
        welcomes = log_entries(page, '[data-type="welcome"]')
        assert len(welcomes) == 2
        assert welcomes[1]["data"]["replayed"] == 3
