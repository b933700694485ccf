/*
 * Sluice storefront chat widget. Plain JavaScript, no build step.
 *
 * Paste into a shop's page (one line):
 *   <script src="https://chat.example/widget/sluice.js" data-token-url="/sluice-token" async></script>
 *
 * Attributes of the script tag:
 *   data-token      a Sluice JWT for this shopper (rendered by the shop's backend), or
 *   data-token-url  a URL of the shop's backend answering {"token":"..."} (fetched with
 *                   the page's cookies, again when the token is refused);
 *   data-api        the Sluice API's base URL (default: where sluice.js came from);
 *   data-title      the panel's title; data-open="true" opens the panel at once.
 *
 * It speaks the WebSocket API GET /v1/ws (docs/api.md): the token travels
 * in Sec-WebSocket-Protocol, never in the URL. The dialog id and the answer
 * under way are kept in localStorage, so a reload or a dropped network
 * resumes the answer from its last event id instead of losing it.
 */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.SluiceWidget) { return; }
  var cfg = {
    token: script.getAttribute("data-token") || "",
    tokenURL: script.getAttribute("data-token-url") || "",
    api: (script.getAttribute("data-api") || new URL(".", script.src).href.replace(/\/widget\/?$/, "")).replace(/\/+$/, ""),
    title: script.getAttribute("data-title") || "Customer service",
    open: script.getAttribute("data-open") === "true"
  };
  var KEY = "sluice:" + cfg.api;   // localStorage: {dialog, pending}
  var saved = load();
  var ws = null, ready = false, retries = 0, retryTimer = 0, blockedUntil = 0, queue = [];
  var waitTimer = 0;       // counts down a refused question's retry_after
  var connecting = false; // a token is being fetched for a new connection

  // ---- DOM -------------------------------------------------------------
  var root = el("div", "sluice-w");
  var launcher = el("button", "sluice-w-launcher", "💬 " + cfg.title);
  var panel = el("div", "sluice-w-panel");
  var head = el("div", "sluice-w-head", cfg.title);
  var close = el("button", "", "×");
  close.setAttribute("aria-label", "close");
  head.appendChild(close);
  var status = el("div", "sluice-w-status");
  var log = el("div", "sluice-w-log");
  log.setAttribute("aria-live", "polite");
  var form = el("form", "sluice-w-form");
  var input = el("input");
  input.placeholder = "Ask a question…";
  input.maxLength = 2000;
  var send = el("button", "", "Send");
  send.type = "submit";
  form.appendChild(input); form.appendChild(send);
  panel.appendChild(head); panel.appendChild(status); panel.appendChild(log); panel.appendChild(form);
  root.appendChild(launcher); root.appendChild(panel);
  var css = document.createElement("link");
  css.rel = "stylesheet"; css.href = new URL("sluice.css", script.src).href;
  document.head.appendChild(css);
  document.body.appendChild(root);

  launcher.onclick = function () { openPanel(); };
  close.onclick = function () { root.classList.remove("open"); };
  form.onsubmit = function (e) {
    e.preventDefault();
    var text = input.value.trim();
    if (!text || send.disabled) { return; }
    input.value = "";
    ask(text);
  };

  function el(tag, cls, text) {
    var n = document.createElement(tag);
    if (cls) { n.className = cls; }
    if (text) { n.textContent = text; }
    return n;
  }
  function load() {
    try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch (e) { return {}; }
  }
  function save() {
    try { localStorage.setItem(KEY, JSON.stringify(saved)); } catch (e) { /* private mode: no resume */ }
  }
  function say(text, kind) {
    status.textContent = text || "";
    status.className = "sluice-w-status" + (text ? " show" : "") + (kind === "error" ? " error" : "");
  }
  function bubble(role, text, state) {
    var b = el("div", "sluice-w-msg " + role, text);
    if (state) { b.setAttribute("data-state", state); }
    log.appendChild(b);
    log.scrollTop = log.scrollHeight;
    return b;
  }

  // ---- the answer under way ------------------------------------------
  // saved.pending = {ref, text, request_id, last_id, answer, retry_at, why}:
  // what was asked and what arrived of its answer, so that a reload resumes
  // it; retry_at (ms) and why while the server asked to wait (429, 503)
  // before the question is asked again or its answer resumed.
  var current = null; // the bot bubble of saved.pending
  function showPending() {
    var p = saved.pending;
    if (!p) { return; }
    if (!current) { current = bubble("bot", p.answer || "", p.answer ? "streaming" : "waiting"); }
    if (p.request_id) { current.setAttribute("data-request-id", p.request_id); }
  }
  function finish(done) {
    stopWaiting();
    var p = saved.pending;
    if (!current) { current = bubble("bot", ""); }
    current.textContent = done.answer || (done.status === "expired" ? "Sorry, that took too long. Please ask again." : "");
    current.setAttribute("data-state", "done");
    current.setAttribute("data-source", done.source || "");
    if (done.handoff) { handoff(); }
    current = null;
    if (p && p.request_id === done.request_id) { saved.pending = null; }
    save();
    send.disabled = Date.now() < blockedUntil;
    input.focus();
  }
  function handoff() {
    var h = bubble("handoff", "A member of our team will take over this conversation shortly.");
    h.setAttribute("data-handoff", "true");
  }

  // ---- talking to Sluice -------------------------------------------------
  function ask(text) {
    bubble("user", text);
    saved.pending = { ref: String(Date.now()), text: text, request_id: "", last_id: "", answer: "" };
    save();
    current = null;
    showPending();
    send.disabled = true;
    frame({ type: "ask", ref: saved.pending.ref, text: text, dialog_id: saved.dialog || undefined });
  }
  function frame(obj) {
    if (ws && ready) { ws.send(JSON.stringify(obj)); } else { queue.push(obj); connect(); }
  }
  function token() {
    if (cfg.token || !cfg.tokenURL) { return Promise.resolve(cfg.token); }
    return fetch(cfg.tokenURL, { credentials: "include" })
      .then(function (r) { if (!r.ok) { throw new Error("token " + r.status); } return r.json(); })
      .then(function (j) { cfg.token = j.token; return cfg.token; });
  }
  function connect() {
    if (ws || retryTimer || connecting) { return; }
    connecting = true;
    token().then(function (tok) { connecting = false; open(tok); },
      function () { connecting = false; say("Cannot sign in to the chat service.", "error"); retry(); });
  }
  function open(tok) {
    var url = cfg.api.replace(/^http/, "ws") + "/v1/ws";
    ready = false;
    try { ws = new WebSocket(url, ["sluice.v1", "bearer." + tok]); } catch (e) { ws = null; retry(); return; }
    ws.onmessage = function (m) { var f; try { f = JSON.parse(m.data); } catch (e) { return; } onFrame(f); };
    ws.onclose = function (e) {
      ws = null; ready = false;
      if (e.code === 4401) { cfg.token = cfg.tokenURL ? "" : cfg.token; }
      if (e.code === 4401 && !cfg.tokenURL) { say("Your chat session expired. Please reload the page.", "error"); return; }
      if (saved.pending || queue.length) { retry(); }
    };
  }
  function retry() {
    // Exponential back-off with jitter: a storefront full of widgets must
    // not reconnect in step after the server restarts.
    var wait = Math.min(30000, 500 * Math.pow(2, retries++)) * (0.5 + Math.random() / 2);
    say("Connection lost, reconnecting…");
    retryTimer = setTimeout(function () { retryTimer = 0; connect(); }, wait);
  }
  function onFrame(f) {
    var p = saved.pending;
    switch (f.type) {
      case "ready":
        ready = true; retries = 0; say("");
        // The answer under way first: resume it where it stopped.
        if (p && p.request_id) {
          stopWaiting();
          ws.send(JSON.stringify({ type: "resume", request_id: p.request_id, dialog_id: saved.dialog, last_event_id: p.last_id }));
        } else if (p && p.retry_at) {
          // Refused, so not on its way: the wait's timer asks it again.
        } else if (p && !queue.some(function (q) { return q.ref === p.ref; })) {
          // Sent, but the connection dropped before it was confirmed: it
          // may or may not be on its way, and asking again could ask twice.
          if (current) { current.remove(); current = null; }
          saved.pending = null; save();
          send.disabled = false;
          say("The connection dropped before your question was confirmed. Please ask again.", "error");
        }
        while (queue.length) { ws.send(JSON.stringify(queue.shift())); }
        return;
      case "accepted":
        saved.dialog = f.dialog_id;
        if (p && p.ref === f.ref) { p.request_id = f.request_id; }
        save(); showPending();
        return;
      case "delta":
        if (!p || p.request_id !== f.request_id) { return; }
        p.answer += f.text; p.last_id = f.id;
        showPending();
        current.textContent = p.answer;
        current.setAttribute("data-state", "streaming");
        log.scrollTop = log.scrollHeight;
        save();
        return;
      case "reset":
        if (!p || p.request_id !== f.request_id) { return; }
        p.answer = ""; p.last_id = f.id;
        showPending();
        current.textContent = "";
        current.setAttribute("data-state", "waiting");
        save();
        return;
      case "done":
        finish(f);
        return;
      case "error":
        onError(f);
        return;
    }
  }
  function onError(f) {
    var p = saved.pending;
    var mine = p && ((f.ref && f.ref === p.ref) || (f.request_id && f.request_id === p.request_id));
    if (mine && f.retry_after) {
      // 429 or 503: the question was not taken (or its answer cannot be
      // read just now). It stays pending and goes again after the wait.
      p.retry_at = Date.now() + f.retry_after * 1000;
      p.why = f.status === 429 ? "You are sending questions too fast." : "We are very busy right now.";
      save();
      blockedUntil = Math.max(blockedUntil, p.retry_at);
      send.disabled = true;
      waitThenRetry();
      return;
    }
    if (f.retry_after) {
      blockedUntil = Date.now() + f.retry_after * 1000;
      var why = f.status === 429 ? "You are sending questions too fast." : "We are very busy right now.";
      say(why + " Please try again in " + f.retry_after + " s.", "error");
      send.disabled = true;
      setTimeout(function () { if (!saved.pending) { send.disabled = false; } say(""); }, f.retry_after * 1000);
    } else {
      say(f.detail || f.title || "Something went wrong.", "error");
    }
    if (mine) {
      clearTimeout(waitTimer); waitTimer = 0;
      if (current) { current.remove(); current = null; }
      saved.pending = null; save();
      if (!f.retry_after) { send.disabled = false; }
    }
  }

  // waitThenRetry shows the pending question's wait, counting down, and
  // then asks it again (a refused ask) or resumes its answer.
  function waitThenRetry() {
    var p = saved.pending;
    clearTimeout(waitTimer); waitTimer = 0;
    if (!p || !p.retry_at) { return; }
    var left = Math.ceil((p.retry_at - Date.now()) / 1000);
    if (left > 0) {
      say(p.why + (p.request_id ? " Resuming" : " Asking again") + " in " + left + " s…", "error");
      waitTimer = setTimeout(waitThenRetry, Math.min(1000, p.retry_at - Date.now()));
      return;
    }
    p.retry_at = 0; save();
    say("");
    if (p.request_id) {
      if (ws && ready) {
        ws.send(JSON.stringify({ type: "resume", request_id: p.request_id, dialog_id: saved.dialog, last_event_id: p.last_id }));
      } else { connect(); } // ready resumes it
      return;
    }
    p.ref = String(Date.now()); save();
    frame({ type: "ask", ref: p.ref, text: p.text, dialog_id: saved.dialog || undefined });
  }
  function stopWaiting() {
    clearTimeout(waitTimer); waitTimer = 0;
    if (saved.pending && saved.pending.retry_at) { saved.pending.retry_at = 0; save(); say(""); }
  }

  // ---- start -------------------------------------------------------------
  // The history is the source of truth after a reload; the answer under
  // way, if any, resumes over the WebSocket.
  function history() {
    if (!saved.dialog) { return Promise.resolve(); }
    return token().then(function (tok) {
      return fetch(cfg.api + "/v1/dialogs/" + saved.dialog, { headers: { Authorization: "Bearer " + tok } });
    }).then(function (r) { return r.ok ? r.json() : { turns: [] }; }).then(function (d) {
      var p = saved.pending;
      (d.turns || []).forEach(function (t) {
        if (p && t.request_id === p.request_id) { return; } // still shown as under way, finished by its done
        var b = bubble(t.role === "user" ? "user" : "bot", t.content, t.role === "user" ? "" : "done");
        if (t.request_id) { b.setAttribute("data-request-id", t.request_id); }
      });
      if (p) { bubble("user", p.text); showPending(); send.disabled = true; waitThenRetry(); }
    }, function () { /* offline: the history comes with the next reload */ });
  }
  function openPanel() {
    root.classList.add("open");
    input.focus();
    connect();
  }
  window.SluiceWidget = { open: openPanel };
  history().then(function () {
    if (cfg.open || saved.pending) { openPanel(); }
  });
  window.addEventListener("online", function () { if (!ws) { clearTimeout(retryTimer); retryTimer = 0; connect(); } });
})();
