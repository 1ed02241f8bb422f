// The chat page: one WebSocket to /ws, frames as in docs/protocol.md.
// No build step. Replies are Markdown written by a model, hence untrusted:
// they reach the document only as marked's HTML cleaned by DOMPurify (both
// vendored in /static/vendor/); everything else (the user's messages, tool
// calls and results, errors) is only ever set as text.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const messages = $("messages");
  const input = $("input");
  const sendButton = $("send");
  const stopButton = $("stop");
  const status = $("status");
  const sessionLabel = $("session-label");
  const sessionInput = $("session-id");
  const credentialInput = $("credential");
  const emptyState = $("empty-state");

  // Errors that answer one client frame; every other error ends the turn.
  const FRAME_ERRORS = new Set(["INVALID_MESSAGE", "MESSAGE_TOO_LARGE", "RATE_LIMITED", "TURN_IN_PROGRESS"]);
  const RECONNECT_CLOSE_CODES = new Set([1006, 1011, 1012, 1013]);

  let sessionId = new URLSearchParams(location.search).get("session_id") || "";
  let credential = sessionStorage.getItem("omnia.credential") || "";
  let socket = null;
  let reply = null;          // {bubble, content, source, frame} of the reply being streamed
  let turnRunning = false;
  let pending = null;        // a message typed while disconnected
  let lastError = null;
  let attempts = 0;
  let reconnectTimer = null;
  let counter = 0;
  // A new session is stored with its first message; until then its id resumes nothing.
  let announced = "";

  function socketUrl() {
    const url = new URL("/ws", location.href);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (sessionId) url.searchParams.set("session_id", sessionId);
    if (credential) {
      // The page does not know the agent's auth type; each method reads its own parameter.
      url.searchParams.set("api_key", credential);
      url.searchParams.set("access_token", credential);
    }
    return url.toString();
  }

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
  }

  function setSession(id) {
    sessionId = id;
    sessionLabel.textContent = id || "—";
    sessionInput.value = id;
    const url = new URL(location.href);
    if (id) url.searchParams.set("session_id", id); else url.searchParams.delete("session_id");
    history.replaceState(null, "", url);
  }

  function setTurn(running) {
    turnRunning = running;
    stopButton.hidden = !running;
    sendButton.disabled = running;
  }

  function add(className, text) {
    const element = document.createElement("div");
    element.className = className;
    if (text !== undefined) element.textContent = text;
    messages.appendChild(element);
    messages.scrollTop = messages.scrollHeight;
    return element;
  }

  function finishReply(state) {
    if (reply) {
      renderReply(reply);
      reply.bubble.dataset.state = state;
    }
    reply = null;
  }

  // Links open elsewhere and tell the target nothing about this page.
  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A" && node.hasAttribute("href")) {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });

  function markdown(source) {
    const html = marked.parse(source, { gfm: true, breaks: true, async: false });
    // No controls either: a reply is read, not filled in (a task list's checkbox is an input, and stays).
    return DOMPurify.sanitize(html, {
      USE_PROFILES: { html: true },
      FORBID_TAGS: ["style", "form", "button", "textarea", "select"],
    });
  }

  function startReply() {
    const bubble = add("message assistant");
    bubble.dataset.state = "streaming";
    const content = document.createElement("div");
    content.className = "content";
    bubble.appendChild(content);
    return { bubble, content, source: "", frame: 0 };
  }

  // Re-rendered whole at most once a frame: a half-written code block or list
  // is only ever shown as Markdown makes of it so far.
  function renderReply(target) {
    cancelAnimationFrame(target.frame);
    target.frame = 0;
    target.content.innerHTML = markdown(target.source);
  }

  function connect() {
    clearTimeout(reconnectTimer);
    if (socket) {
      socket.onclose = null;
      socket.close();
    }
    lastError = null;
    setStatus("connecting", "connecting…");
    const ws = new WebSocket(socketUrl());
    socket = ws;
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      handle(frame);
    };
    ws.onclose = (event) => onClose(event);
  }

  function send(frame) {
    if (socket && socket.readyState === WebSocket.OPEN) {
      socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  function handle(frame) {
    switch (frame.type) {
      case "connected":
        attempts = 0;
        if (frame.resumed) {
          setSession(frame.session_id);
        } else {
          setSession("");
          announced = frame.session_id;
          sessionLabel.textContent = announced;
        }
        $("agent").textContent = frame.agent;
        $("empty-agent").textContent = frame.agent;
        document.title = `${frame.agent} · Omnia`;
        setStatus("connected", `connected · prompt ${frame.prompt_version}`);
        if (frame.resumed) add("notice", `resumed session with ${frame.turns} earlier turn(s)`);
        if (pending !== null) {
          const content = pending;
          pending = null;
          sendMessage(content);
        }
        break;
      case "chunk": {
        if (!reply) reply = startReply();
        reply.source += frame.content;
        const streaming = reply;
        if (!streaming.frame) {
          streaming.frame = requestAnimationFrame(() => {
            renderReply(streaming);
            messages.scrollTop = messages.scrollHeight;
          });
        }
        break;
      }
      case "tool_call":
        finishReply("done");
        showToolCall(frame);
        break;
      case "tool_result": {
        const call = messages.querySelector(`.tool-call[data-id="${CSS.escape(frame.id)}"]`);
        const target = call || add("tool-call");
        const result = document.createElement("span");
        result.className = "tool-result";
        result.textContent = (frame.is_error ? "error: " : "→ ") + frame.content;
        target.appendChild(result);
        break;
      }
      case "done": {
        const finished = reply || startReply();
        renderReply(finished);
        const usage = document.createElement("span");
        usage.className = "usage";
        usage.textContent = usageLine(frame);
        finished.bubble.appendChild(usage);
        finished.bubble.dataset.state = "done";
        reply = null;
        setTurn(false);
        messages.scrollTop = messages.scrollHeight;
        break;
      }
      case "error":
        lastError = frame;
        add("error", `${frame.code}: ${frame.message}${frame.retryable ? " (retryable)" : ""}`);
        if (!FRAME_ERRORS.has(frame.code)) {
          finishReply("interrupted");
          setTurn(false);
        }
        break;
      default:
        break;
    }
  }

  // A free model (the embedded one, or a Provider without pricing) costs nothing: no "$0.000000".
  function usageLine(frame) {
    const u = frame.usage || {};
    const parts = [`${u.input_tokens ?? 0} in · ${u.output_tokens ?? 0} out tokens`];
    const cost = Number(u.cost ?? 0);
    if (cost > 0) parts.push(`$${cost.toFixed(6)}`);
    parts.push(frame.finish_reason);
    return parts.join(" · ");
  }

  function showToolCall(frame) {
    const node = $("tool-call-template").content.firstElementChild.cloneNode(true);
    node.dataset.id = frame.id;
    node.querySelector(".tool-name").textContent = frame.name;
    node.querySelector(".tool-args").textContent = JSON.stringify(frame.arguments);
    const actions = node.querySelector(".tool-actions");
    const answerWithResult = () => {
      const field = document.createElement("input");
      field.placeholder = "result for the agent";
      const submit = document.createElement("button");
      submit.textContent = "Send result";
      submit.onclick = () => {
        send({ type: "tool_result", id: frame.id, content: field.value });
        actions.replaceChildren();
      };
      actions.replaceChildren(field, submit);
    };
    if (frame.require_approval) {
      const approve = document.createElement("button");
      approve.textContent = "Approve";
      const deny = document.createElement("button");
      deny.textContent = "Deny";
      approve.onclick = () => {
        send({ type: "approval", id: frame.id, approved: true });
        if (frame.client_side) answerWithResult(); else actions.replaceChildren();
      };
      deny.onclick = () => {
        send({ type: "approval", id: frame.id, approved: false });
        actions.replaceChildren();
      };
      actions.replaceChildren(approve, deny);
    } else if (frame.client_side) {
      answerWithResult();
    }
    messages.appendChild(node);
    messages.scrollTop = messages.scrollHeight;
  }

  function onClose(event) {
    socket = null;
    finishReply("interrupted");
    setTurn(false);
    if (event.code === 4401) {
      setStatus("error", "unauthorized");
      $("settings").open = true;
      credentialInput.focus();
      return;
    }
    if (event.code === 4404) {
      setStatus("error", "session not found");
      setSession("");
      return;
    }
    const retryable = (lastError && lastError.retryable) || RECONNECT_CLOSE_CODES.has(event.code);
    if (retryable) {
      const delay = Math.min(10_000, 500 * 2 ** attempts);
      attempts += 1;
      setStatus("closed", `disconnected · reconnecting in ${Math.round(delay / 1000)}s`);
      reconnectTimer = setTimeout(connect, delay);
    } else {
      setStatus("closed", "disconnected · send a message to reconnect");
    }
  }

  function sendMessage(content) {
    counter += 1;
    if (!send({ type: "message", id: `m${Date.now()}-${counter}`, content })) {
      pending = content;
      connect();
      return;
    }
    if (announced) {
      setSession(announced);
      announced = "";
    }
    add("message user", content);
    setTurn(true);
  }

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const content = input.value.trim();
    if (!content || turnRunning) return;
    input.value = "";
    sendMessage(content);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });

  stopButton.addEventListener("click", () => send({ type: "cancel" }));

  $("session-form").addEventListener("submit", (event) => {
    event.preventDefault();
    credential = credentialInput.value.trim();
    sessionStorage.setItem("omnia.credential", credential);
    messages.replaceChildren();
    setSession(sessionInput.value.trim());
    attempts = 0;
    connect();
  });

  $("new-session").addEventListener("click", () => {
    messages.replaceChildren();
    setSession("");
    attempts = 0;
    connect();
  });

  new MutationObserver(() => {
    emptyState.hidden = messages.childElementCount > 0;
  }).observe(messages, { childList: true });

  credentialInput.value = credential;
  setSession(sessionId);
  connect();
})();
