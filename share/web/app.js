// lmd chat: a page for `lmd-run serve` that talks to its OpenAI API (/v1/chat/completions, streamed).
// Plain JavaScript, no build step, nothing from the internet. Model text is shown through
// lmdMarkdown (DOM nodes and text nodes only), user text through textContent.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const ui = {
    messages: $("messages"), input: $("input"), send: $("send"), stop: $("stop"), composer: $("composer"),
    newChat: $("new-chat"), system: $("system"), temperature: $("temperature"), temperatureValue: $("temperature-value"),
    maxTokens: $("max-tokens"), apiKey: $("api-key"), keyBox: $("key-box"), status: $("status"), speed: $("speed"),
    model: $("model"), settings: $("settings"), settingsToggle: $("settings-toggle"),
  };
  const store = window.localStorage;
  let history = [];      // {role, content} of this chat
  let model = null;      // the server's model name
  let running = null;    // {controller, node, text} while an answer streams
  let checks = 0;        // /v1/models asked so far: only the last answer, for the key in the field, counts
  let checkStatus = false;  // the status line says what /v1/models answered (a success clears it)

  function setStatus(text, isError) {
    ui.status.textContent = text || "";
    ui.status.className = isError ? "error" : "";
  }

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = ui.apiKey.value.trim();
    if (key) h["Authorization"] = "Bearer " + key;
    return h;
  }

  // The server answered 401: ask for the key (the field takes the focus when it first shows), or say
  // that the one given was refused.
  function needKey() {
    if (ui.keyBox.hidden || ui.settings.hidden) ui.apiKey.focus();
    ui.keyBox.hidden = false;
    ui.settings.hidden = false;
    setStatus(ui.apiKey.value.trim() ? "The API key was refused (401): check it under Settings."
      : "This server wants an API key: enter it under Settings, then send again.", true);
  }

  // An error answer's message (OpenAI's {"error": {"message"}}), else the HTTP status line.
  async function errorText(res) {
    try {
      const j = await res.json();
      if (j && j.error && j.error.message) return j.error.message;
    } catch (e) { /* not JSON */ }
    return "HTTP " + res.status + " " + res.statusText;
  }

  function downText(err) {
    return "Cannot reach the server at " + location.origin + " (" + (err && err.message ? err.message : err) +
      "). Is lmd-run serve running?";
  }

  // The model's name, and whether the server wants a key. An answer that comes after a later check
  // began, or after the key changed, or once an answer has streamed, is dropped: the page shows
  // what the newest exchange said, whatever order the answers arrive in.
  async function loadModel() {
    const mine = ++checks, key = ui.apiKey.value.trim();
    const current = () => mine === checks && key === ui.apiKey.value.trim();
    let text = "";
    try {
      const res = await fetch("/v1/models", { headers: headers() });
      if (!current()) return;
      if (res.status === 401) {
        needKey();
        checkStatus = true;
        return;
      }
      if (!res.ok) {
        text = await errorText(res);
      } else {
        const j = await res.json();
        model = j.data && j.data[0] ? j.data[0].id : null;
        ui.model.textContent = model ? "model: " + model : "";
      }
    } catch (err) {
      text = downText(err);
    }
    if (!current() || (!text && !checkStatus)) return;
    setStatus(text, !!text);
    checkStatus = !!text;
  }

  function addMessage(role, text) {
    const div = document.createElement("div");
    div.className = "msg " + role;
    const label = document.createElement("span");
    label.className = "role";
    label.textContent = role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "body";
    div.append(label, body);
    ui.messages.appendChild(div);
    showText(div, role, text);
    return div;
  }

  function showText(div, role, text) {
    const body = div.querySelector(".body");
    if (role === "user") {
      body.textContent = text;
    } else {
      body.replaceChildren(window.lmdMarkdown.render(text));
    }
    ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function setRunning(on) {
    ui.send.disabled = on;
    ui.stop.hidden = !on;
    ui.newChat.disabled = on;
  }

  // Server-sent events from a fetch body: calls onData with each "data:" payload.
  async function readEvents(res, onData) {
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let cut;
      while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = event.split(/\r?\n/).filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
        if (data && onData(data) === false) return;
      }
    }
  }

  async function send(text) {
    if (running) return;
    checks++;  // what a send learns is newer than any check still on its way
    checkStatus = false;
    setStatus("");
    history.push({ role: "user", content: text });
    const asked = addMessage("user", text);
    const node = addMessage("assistant", "");
    const controller = new AbortController();
    running = { controller: controller, node: node, text: "" };
    setRunning(true);
    const messages = [];
    if (ui.system.value.trim()) messages.push({ role: "system", content: ui.system.value });
    messages.push(...history);
    const body = {
      messages: messages, stream: true, stream_options: { include_usage: true },
      temperature: Number(ui.temperature.value),
    };
    if (model) body.model = model;
    const mt = parseInt(ui.maxTokens.value, 10);
    if (mt > 0) body.max_tokens = mt;
    let tokens = 0, first = 0, last = 0, usage = null, failed = null;
    try {
      const res = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
      });
      if (res.status === 401) {
        failed = "key";
      } else if (!res.ok) {
        failed = await errorText(res);
      } else {
        await readEvents(res, function (data) {
          if (data === "[DONE]") return false;
          let j;
          try { j = JSON.parse(data); } catch (e) { return true; }
          if (j.error) { failed = j.error.message || "the server failed"; return false; }
          if (j.usage) usage = j.usage;
          const ch = j.choices && j.choices[0];
          const piece = ch && ch.delta && ch.delta.content;
          if (piece) {
            const now = performance.now();
            if (!first) first = now;
            last = now;
            tokens++;
            running.text += piece;
            showText(node, "assistant", running.text);
          }
          return true;
        });
      }
    } catch (err) {
      if (err.name !== "AbortError") failed = downText(err);
    }
    const stopped = controller.signal.aborted;
    const answer = running.text;
    running = null;
    setRunning(false);
    if (failed) {
      history.pop();  // the question goes back to the input box, to send again
      node.remove();
      asked.remove();
      ui.input.value = text;
      if (failed === "key") needKey();
      else setStatus(failed, true);
      checkStatus = failed === "key";  // a check that the key works clears it
      return;
    }
    if (stopped) node.classList.add("stopped");
    history.push({ role: "assistant", content: answer });
    const n = usage && usage.completion_tokens ? usage.completion_tokens : tokens;
    const secs = (last - first) / 1000;
    if (n > 1 && secs > 0)
      ui.speed.textContent = "last answer: " + n + " tokens, " + ((n - 1) / secs).toFixed(1) + " tokens/s" +
        (stopped ? " (stopped)" : "");
    else
      ui.speed.textContent = "last answer: " + n + " token" + (n === 1 ? "" : "s") + (stopped ? " (stopped)" : "");
  }

  ui.composer.addEventListener("submit", function (ev) {
    ev.preventDefault();
    const text = ui.input.value;
    if (!text.trim() || running) return;
    ui.input.value = "";
    send(text);
  });
  ui.input.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      ui.composer.requestSubmit();
    }
  });
  ui.stop.addEventListener("click", function () {
    if (running) running.controller.abort();
  });
  ui.newChat.addEventListener("click", function () {
    if (running) return;
    history = [];
    ui.messages.replaceChildren();
    ui.speed.textContent = "";
    setStatus("");
    ui.input.focus();
  });
  ui.settingsToggle.addEventListener("click", function () {
    ui.settings.hidden = !ui.settings.hidden;
    ui.settingsToggle.setAttribute("aria-expanded", String(!ui.settings.hidden));
  });
  ui.temperature.addEventListener("input", function () {
    ui.temperatureValue.textContent = ui.temperature.value;
  });
  // settings are kept in this browser
  [["system", ui.system], ["temperature", ui.temperature], ["maxTokens", ui.maxTokens], ["apiKey", ui.apiKey]].forEach(
    function (p) {
      const v = store.getItem("lmd." + p[0]);
      if (v !== null) p[1].value = v;
      p[1].addEventListener("change", function () { store.setItem("lmd." + p[0], p[1].value); });
    });
  ui.temperatureValue.textContent = ui.temperature.value;
  if (ui.apiKey.value) ui.keyBox.hidden = false;
  ui.apiKey.addEventListener("change", loadModel);
  loadModel();
  ui.input.focus();
})();
