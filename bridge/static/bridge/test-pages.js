// What both test pages share: the log of received frames and the push form.
"use strict";

const TestPage = (() => {
  const $ = (id) => document.getElementById(id);

  /** The text of a data field: JSON when it parses, the plain string otherwise. */
  function parseData(text) {
    const trimmed = text.trim();
    if (trimmed === "") return null;
    try {
      return JSON.parse(trimmed);
    } catch {
      return text;
    }
  }

  /** Comma-separated names, trimmed, without empties or repeats. */
  function splitList(text) {
    return [...new Set(text.split(",").map((s) => s.trim()).filter(Boolean))];
  }

  function field(name, value) {
    const span = document.createElement("span");
    span.className = `field field-${name}`;
    span.dataset.field = name;
    span.textContent = value;
    span.title = name;
    return span;
  }

  /**
   * Append one received frame to the log (newest last).
   * frame: the decoded JSON; extra: {event, lastEventId} for SSE.
   */
  function log(frame, extra = {}) {
    const entry = document.createElement("li");
    const type = frame && typeof frame === "object" ? frame.type || "" : "";
    entry.className = `log-entry type-${type || "other"}`;
    entry.dataset.testid = "log-entry";
    entry.dataset.type = type;
    if (frame && frame.id != null) entry.dataset.id = frame.id;
    if (frame && frame.event_type != null) entry.dataset.eventType = frame.event_type;
    if (frame && frame.channel != null) entry.dataset.channel = frame.channel;
    if (extra.event != null) entry.dataset.event = extra.event;
    if (extra.lastEventId != null) entry.dataset.lastEventId = extra.lastEventId;

    entry.append(field("time", new Date().toLocaleTimeString()));
    if (extra.event != null) entry.append(field("event", `event: ${extra.event}`));
    entry.append(field("type", type || "?"));
    if (frame && frame.id != null) entry.append(field("id", `id ${frame.id}`));
    if (frame && frame.event_type != null) entry.append(field("event_type", frame.event_type));
    if (frame && frame.channel != null) entry.append(field("channel", `#${frame.channel}`));
    if (frame && frame.from) entry.append(field("from", `from ${JSON.stringify(frame.from)}`));
    if (extra.lastEventId) entry.append(field("last-event-id", `Last-Event-ID ${extra.lastEventId}`));
    // Messages show their data; other frames (ack, error, subscribed...) show
    // everything but their type.
    let shown = frame;
    if (frame && typeof frame === "object" && "data" in frame) {
      shown = frame.data;
    } else if (frame && typeof frame === "object") {
      shown = Object.fromEntries(Object.entries(frame).filter(([k]) => k !== "type"));
    }
    entry.append(field("data", JSON.stringify(shown)));

    $("log").append(entry);
    $("log-count").textContent = $("log").children.length;
    entry.scrollIntoView({ block: "nearest" });
  }

  /**
   * Wire the push form: POST /api/v1/push with exactly one target.
   * beforePush(eventType) runs first (the SSE page listens for the type there).
   */
  function initPushForm({ beforePush = () => {} } = {}) {
    const target = $("push-target");
    const to = $("push-to");
    const syncTarget = () => {
      to.disabled = target.value === "broadcast";
      to.placeholder = target.value === "channel" ? "news" : "user1";
    };
    target.addEventListener("change", syncTarget);
    syncTarget();

    $("push-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const eventType = $("push-event-type").value.trim();
      const body = { data: parseData($("push-data").value) };
      if (target.value === "broadcast") body.broadcast = true;
      else body[target.value] = to.value.trim();
      if (eventType) body.event_type = eventType;
      beforePush(eventType || "message");

      const receipt = document.createElement("li");
      receipt.className = "push-receipt";
      receipt.dataset.testid = "push-receipt";
      receipt.dataset.state = "pending";
      receipt.textContent = `${JSON.stringify(body)} …`;
      $("push-receipts").append(receipt);
      try {
        const response = await fetch("/api/v1/push", {
          method: "POST",
          headers: { "Content-Type": "application/json", Accept: "application/json" },
          body: JSON.stringify(body),
        });
        const text = await response.text();
        receipt.dataset.status = response.status;
        receipt.dataset.state = response.ok ? "ok" : "failed";
        try {
          const answer = JSON.parse(text);
          if (answer.id) receipt.dataset.id = answer.id;
        } catch {
          // Not JSON: shown as it came.
        }
        receipt.textContent = `${response.status} ${text}`;
      } catch (error) {
        receipt.dataset.state = "failed";
        receipt.textContent = `request failed: ${error}`;
      }
      receipt.scrollIntoView({ block: "nearest" });
    });
  }

  function initLog() {
    $("log-clear").addEventListener("click", () => {
      $("log").replaceChildren();
      $("log-count").textContent = "0";
    });
  }

  /** Show a connection state as text and as data-state. */
  function setState(element, state, detail = "") {
    element.dataset.state = state;
    element.textContent = detail ? `${state} (${detail})` : state;
  }

  initLog();
  return { $, parseData, splitList, log, initPushForm, setState };
})();
