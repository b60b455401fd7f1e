// The SSE test page: one EventSource on /events/, its events, and the push form.
"use strict";

(() => {
  const { $, splitList, log, initPushForm, setState } = TestPage;
  // Always listened for; an EventSource only fires `onmessage` for events
  // named "message", so every other event name needs its own listener.
  const ALWAYS = ["welcome", "message", "error"];
  let source = null;
  let listening = new Set();
  const wanted = new Set(ALWAYS); // names typed in the page, kept across Connect
  let created = 0;
  let opens = 0;

  function onEvent(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      frame = { type: "?", data: event.data };
    }
    if (frame.type === "welcome") $("welcome").textContent = JSON.stringify(frame, null, 2);
    log(frame, { event: event.type, lastEventId: event.lastEventId });
  }

  function onError(event) {
    // An `event: error` from the gateway is a MessageEvent with data; a
    // connection failure is a plain Event: the browser retries (CONNECTING)
    // unless it gave up (CLOSED, e.g. a non-200 answer).
    if (event instanceof MessageEvent && event.data !== undefined) {
      onEvent(event);
      return;
    }
    if (event.target !== source) return;
    if (source.readyState === EventSource.CONNECTING) setState($("state"), "reconnecting");
    else if (source.readyState === EventSource.CLOSED) {
      setState($("state"), "closed", "the browser gave up");
      $("disconnect").disabled = true;
    }
  }

  /** Listen for `name` on the open EventSource (once per name). */
  function listen(name) {
    wanted.add(name);
    if (!source || listening.has(name)) return;
    source.addEventListener(name, name === "error" ? onError : onEvent);
    listening.add(name);
    $("listening").textContent = [...listening].join(", ");
  }

  function connect() {
    if (source) source.close();
    const params = new URLSearchParams();
    const user = $("user-id").value.trim();
    const token = $("token").value.trim();
    if (user) params.set("user_id", user);
    // A handy default target for the push form: oneself.
    if (user && !$("push-to").value) $("push-to").value = user;
    if (token) params.set("token", token);
    for (const channel of splitList($("channels").value)) params.append("channel", channel);

    // The browser reconnects this same EventSource by itself, with
    // Last-Event-ID: the page never opens another one on errors.
    const es = new EventSource(`/events/?${params}`);
    source = es;
    listening = new Set();
    created += 1;
    $("source-count").textContent = created;
    $("welcome").textContent = "";
    setState($("state"), "connecting");
    $("disconnect").disabled = false;
    es.addEventListener("open", () => {
      if (es !== source) return;
      opens += 1;
      $("open-count").textContent = opens;
      setState($("state"), "open");
    });
    for (const name of [...wanted, ...splitList($("listen").value)]) listen(name);
  }

  $("connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    connect();
  });
  $("disconnect").addEventListener("click", () => {
    if (!source) return;
    source.close();
    setState($("state"), "closed");
    $("disconnect").disabled = true;
  });
  $("listen").addEventListener("change", () => {
    for (const name of splitList($("listen").value)) listen(name);
  });

  // Listen for the event type before the push, so its event is not missed.
  initPushForm({ beforePush: listen });
  const query = new URLSearchParams(location.search);
  if (query.get("user_id")) $("user-id").value = query.get("user_id");
  if (query.getAll("channel").length) $("channels").value = query.getAll("channel").join(", ");
})();
