// The WebSocket test page: one socket to /ws/, its frames, and the push form.
"use strict";

(() => {
  const { $, parseData, log, initPushForm, setState } = TestPage;
  let socket = null;
  let heartbeat = null;
  let requestId = 0;
  const subscriptions = new Set();

  const showSubscriptions = () => {
    $("subscriptions").textContent = [...subscriptions].join(", ") || "none";
  };

  function send(frame) {
    if (!socket || socket.readyState !== WebSocket.OPEN) {
      log({ type: "local-error", message: "not connected" });
      return;
    }
    socket.send(JSON.stringify({ ...frame, request_id: ++requestId }));
  }

  function onFrame(event) {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      frame = { type: "?", data: event.data };
    }
    if (frame.type === "welcome") {
      $("welcome").textContent = JSON.stringify(frame, null, 2);
      // The welcome announces how often the gateway expects a client ping.
      clearInterval(heartbeat);
      const seconds = Number(frame.heartbeat_interval) || 30;
      heartbeat = setInterval(() => send({ action: "ping" }), seconds * 1000);
    } else if (frame.type === "ping") {
      socket.send(JSON.stringify({ action: "pong" }));
    } else if (frame.type === "subscribed") {
      subscriptions.add(frame.channel);
      showSubscriptions();
    } else if (frame.type === "unsubscribed") {
      subscriptions.delete(frame.channel);
      showSubscriptions();
    }
    log(frame);
  }

  function connect() {
    if (socket) socket.close(1000);
    const params = new URLSearchParams();
    const user = $("user-id").value.trim();
    const token = $("token").value.trim();
    if (user) params.set("user_id", user);
    // A handy default target for the push form: oneself.
    if (user && !$("push-to").value) $("push-to").value = user;
    if (token) params.set("token", token);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/ws/?${params}`);
    socket = ws;
    subscriptions.clear();
    showSubscriptions();
    $("welcome").textContent = "";
    setState($("status"), "connecting");
    $("disconnect").disabled = false;

    ws.addEventListener("open", () => setState($("status"), "open"));
    ws.addEventListener("message", onFrame);
    ws.addEventListener("close", (event) => {
      if (socket !== ws) return; // an older socket, replaced by Connect
      clearInterval(heartbeat);
      $("status").dataset.closeCode = event.code;
      setState($("status"), "closed", `code ${event.code}${event.reason ? `: ${event.reason}` : ""}`);
      $("disconnect").disabled = true;
    });
  }

  $("connect-form").addEventListener("submit", (event) => {
    event.preventDefault();
    connect();
  });
  $("disconnect").addEventListener("click", () => socket && socket.close(1000));

  $("channel-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send({ action: "subscribe", channel: $("channel").value.trim() });
  });
  $("unsubscribe").addEventListener("click", () => {
    send({ action: "unsubscribe", channel: $("channel").value.trim() });
  });

  $("publish-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const frame = {
      action: "publish",
      channel: $("publish-channel").value.trim(),
      data: parseData($("publish-data").value),
    };
    const eventType = $("publish-event-type").value.trim();
    if (eventType) frame.event_type = eventType;
    send(frame);
  });

  $("send-form").addEventListener("submit", (event) => {
    event.preventDefault();
    send({ action: "send", to: $("send-to").value.trim(), data: parseData($("send-data").value) });
  });

  initPushForm();
  showSubscriptions();
  const query = new URLSearchParams(location.search);
  if (query.get("user_id")) $("user-id").value = query.get("user_id");
})();
