// Calls through the gateway from the browser: the playground and a key's test call.
//
// A key's secret is stored hashed and shown once, so the dashboard cannot call as a key. The
// browser does, with the secret its user pasted (or the one the Key issued page shows), straight
// to /v1/chat/completions on this host: the same authentication, limits, budgets, routing and log
// as any client's call. The secret never goes to the dashboard; it is kept, if at all, in this
// tab's sessionStorage.
(function () {
  "use strict";

  var SCHEME = "sk-nemo-";
  var PREFIX_LENGTH = 12;
  var BUDGET_LEVELS = {
    key: "this key's budget", team: "its team's budget", org: "the organization's budget",
    credits: "the organization's credits", run: "the run's envelope"
  };

  function remembered(prefix) {
    try { return window.sessionStorage.getItem("nemo-secret:" + prefix) || ""; } catch (e) { return ""; }
  }

  function remember(secret) {
    try { window.sessionStorage.setItem("nemo-secret:" + prefixOf(secret), secret); } catch (e) { /* storage off */ }
  }

  function forget(prefix) {
    try { window.sessionStorage.removeItem("nemo-secret:" + prefix); } catch (e) { /* storage off */ }
  }

  function prefixOf(secret) {
    return secret.slice(SCHEME.length, SCHEME.length + PREFIX_LENGTH);
  }

  // Why a pasted secret cannot be the chosen key's, or "" when it may be.
  function secretProblem(secret, key) {
    if (!secret) return "Paste the secret of " + key.name + " (sk-nemo-" + key.prefix + "…) first.";
    if (secret.indexOf(SCHEME) !== 0) return "A key's secret starts with sk-nemo-.";
    if (prefixOf(secret) !== key.prefix) {
      return "That secret is not the secret of " + key.name + " (sk-nemo-" + key.prefix + "…); it starts sk-nemo-" +
        prefixOf(secret) + "….";
    }
    return "";
  }

  // A refusal in words: what the status means, then the gateway's own message.
  function explain(status, error, headers) {
    error = error || {};
    var message = error.message || "";
    var words;
    if (status === 401) words = "The gateway did not accept this secret: the key is unknown, revoked or expired.";
    else if (status === 402) {
      words = "Refused before anything was sent upstream: " + (BUDGET_LEVELS[error.param] || "a budget") +
        " cannot pay for this call. Nothing was charged.";
    } else if (status === 403) words = "This key may not use that model.";
    else if (status === 404) words = "No such model.";
    else if (status === 400 || status === 413 || status === 422) words = "The request was refused as invalid.";
    else if (status === 429) {
      var wait = headers && headers.get("retry-after");
      words = (error.code === "run_loop_detected" ? "The loop guard stopped this run." : "Rate limited.") +
        (wait ? " Try again in " + wait + " s." : "");
    } else if (status === 502) {
      var attempts = headers && headers.get("x-nemo-attempts");
      words = "Every deployment of the model's chain failed" + (attempts ? " (" + attempts + ")" : "") + ".";
    } else words = "The call failed.";
    return status + ": " + words + (message ? " The gateway says: " + message : "");
  }

  function gatewayHeaders(headers) {
    var shown = [];
    headers.forEach(function (value, name) {
      if (name.indexOf("x-nemo-") === 0 || name.indexOf("x-ratelimit-") === 0) shown.push(name + ": " + value);
    });
    return shown.sort().join("\n");
  }

  // One chat call. ``onText(text)`` gets the answer so far each time a piece of it arrives.
  // Resolves to {status, headers, text, toolCalls, usage, error, chunks}; never rejects for an
  // answer the gateway gave (a network failure does).
  function chat(secret, body, onText) {
    return fetch("/v1/chat/completions", {
      method: "POST",
      headers: {"Authorization": "Bearer " + secret, "Content-Type": "application/json"},
      body: JSON.stringify(body),
      credentials: "omit"
    }).then(function (response) {
      var result = {status: response.status, headers: response.headers, text: "", toolCalls: [], usage: null,
                    error: null, chunks: 0};
      var streamed = (response.headers.get("content-type") || "").indexOf("text/event-stream") === 0;
      if (!response.ok || !streamed) {
        return response.text().then(function (raw) {
          var parsed = null;
          try { parsed = JSON.parse(raw); } catch (e) { parsed = null; }
          if (!response.ok) {
            result.error = (parsed && parsed.error) || {message: raw.slice(0, 300)};
            return result;
          }
          var message = (parsed && parsed.choices && parsed.choices[0] && parsed.choices[0].message) || {};
          result.text = message.content || "";
          result.toolCalls = (message.tool_calls || []).map(function (call) {
            return call["function"].name + "(" + call["function"].arguments + ")";
          });
          result.usage = parsed && parsed.usage;
          result.chunks = 1;
          onText(result.text);
          return result;
        });
      }
      return readStream(response, result, onText);
    });
  }

  function readStream(response, result, onText) {
    var reader = response.body.getReader();
    var decoder = new TextDecoder();
    var pending = "";
    var calls = {};
    function take(line) {
      if (line.indexOf("data:") !== 0) return;
      var data = line.slice(5).trim();
      if (!data || data === "[DONE]") return;
      var chunk;
      try { chunk = JSON.parse(data); } catch (e) { return; }
      if (chunk.error) { result.error = chunk.error; return; }
      if (chunk.usage) result.usage = chunk.usage;
      var delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (!delta) return;
      (delta.tool_calls || []).forEach(function (call) {
        var known = calls[call.index] = calls[call.index] || {name: "", arguments: ""};
        if (call["function"] && call["function"].name) known.name = call["function"].name;
        if (call["function"] && call["function"].arguments) known.arguments += call["function"].arguments;
      });
      if (delta.content) {
        result.text += delta.content;
        result.chunks += 1;
        onText(result.text);
      }
    }
    function pump() {
      return reader.read().then(function (step) {
        pending += decoder.decode(step.value || new Uint8Array(), {stream: !step.done});
        var lines = pending.split("\n");
        pending = step.done ? "" : lines.pop();
        lines.forEach(function (line) { take(line.replace(/\r$/, "")); });
        if (!step.done) return pump();
        result.toolCalls = Object.keys(calls).map(function (index) {
          return calls[index].name + "(" + calls[index].arguments + ")";
        });
        return result;
      });
    }
    return pump();
  }

  // A streamed call's cost is settled after its last byte: read it from the call's log row,
  // which lands a moment later.
  function settledCost(apiUrl, tries) {
    return fetch(apiUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}}).then(function (response) {
      if (response.ok) return response.json().then(function (row) { return row.cost; });
      if (tries <= 1) return null;
      return new Promise(function (resolve) { setTimeout(resolve, 400); }).then(function () {
        return settledCost(apiUrl, tries - 1);
      });
    });
  }

  function usageText(usage) {
    return usage ? usage.prompt_tokens + " in, " + usage.completion_tokens + " out" : "—";
  }

  // What a finished call says about itself: its request id linked to its page, where it was
  // served, its attempts and cost.
  function showFacts(root, result, logUrl, apiLogUrl) {
    var headers = result.headers;
    var requestId = headers.get("x-nemo-request-id");
    var facts = root.querySelector("[data-call-facts]");
    facts.hidden = false;
    var idCell = facts.querySelector("[data-request-id]");
    idCell.textContent = "";
    if (requestId) {
      var link = document.createElement("a");
      link.href = logUrl.replace("REQUEST_ID", encodeURIComponent(requestId));
      link.textContent = requestId;
      link.setAttribute("data-call-link", "");
      idCell.appendChild(link);
    } else idCell.textContent = "—";
    facts.querySelector("[data-deployment]").textContent = headers.get("x-nemo-deployment") || "not served";
    facts.querySelector("[data-attempts]").textContent = headers.get("x-nemo-attempts") || "none";
    facts.querySelector("[data-usage]").textContent = usageText(result.usage);
    var cost = facts.querySelector("[data-cost]");
    if (headers.get("x-nemo-cost")) cost.textContent = "$" + headers.get("x-nemo-cost");
    else if (requestId && apiLogUrl) {
      cost.textContent = "settling…";
      settledCost(apiLogUrl.replace("REQUEST_ID", encodeURIComponent(requestId)), 6).then(function (settled) {
        cost.textContent = settled === null ? "on the call's page" : "$" + settled;
      });
    } else cost.textContent = "—";
    var shown = root.querySelector("[data-headers]");
    if (shown) {
      shown.textContent = gatewayHeaders(headers);
      root.querySelector("[data-headers-wrap]").hidden = false;
    }
  }

  // --- the playground ------------------------------------------------------------------------

  var CONTROLLED = ["model", "messages", "temperature", "max_tokens", "max_completion_tokens", "stream"];

  function playground(root) {
    var keys = JSON.parse(document.getElementById("pg-keys").textContent);
    var stored = JSON.parse(document.getElementById("pg-stored").textContent);
    var form = root.querySelector("[data-playground-form]");
    var keySelect = form.querySelector("#pg-key");
    var secretInput = form.querySelector("#pg-secret");
    var modelSelect = form.querySelector("#pg-model");
    var list = form.querySelector("[data-messages]");
    var extra = form.querySelector("#pg-extra");
    var formError = form.querySelector("[data-pg-error]");
    var answer = root.querySelector("[data-answer]");
    var callError = root.querySelector("[data-call-error]");
    var tokenField = stored && "max_completion_tokens" in stored && !("max_tokens" in stored)
      ? "max_completion_tokens" : "max_tokens";

    function chosenKey() {
      var id = Number(keySelect.value);
      return keys.filter(function (key) { return key.id === id; })[0];
    }

    function fillModels(wanted) {
      var key = chosenKey();
      modelSelect.textContent = "";
      var names = key.models.slice();
      if (wanted && names.indexOf(wanted) < 0) names.unshift(wanted);
      names.forEach(function (name) {
        var option = document.createElement("option");
        option.value = name;
        option.textContent = name + (key.models.indexOf(name) < 0 ? " (this key may not use it)" : "");
        modelSelect.appendChild(option);
      });
      if (wanted) modelSelect.value = wanted;
    }

    function onKey() {
      var key = chosenKey();
      secretInput.value = remembered(key.prefix);
      fillModels(modelSelect.value || (stored && stored.model));
    }

    function addMessage(message) {
      var item = document.createElement("li");
      item.className = "pg-message";
      var role = document.createElement("select");
      role.setAttribute("aria-label", "Role");
      ["user", "assistant", "tool", "developer", "system"].forEach(function (name) {
        var option = document.createElement("option");
        option.value = option.textContent = name;
        role.appendChild(option);
      });
      var content = document.createElement("textarea");
      content.rows = 3;
      content.setAttribute("aria-label", "Message");
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link small";
      remove.textContent = "Remove";
      remove.addEventListener("click", function () { item.remove(); });
      // The message as it was stored, so what the form does not show (tool calls, a tool call's
      // id, content parts) goes out again as it came.
      item._stored = message || {};
      role.value = (message && message.role) || "user";
      content.value = messageText(message && message.content);
      item._text = content.value;
      var head = document.createElement("div");
      head.className = "row spread";
      head.appendChild(role);
      head.appendChild(remove);
      item.appendChild(head);
      item.appendChild(content);
      if (message && message.tool_calls) {
        var note = document.createElement("div");
        note.className = "small muted";
        note.textContent = "Tool calls kept: " + message.tool_calls.map(function (call) {
          return call["function"] ? call["function"].name : "?";
        }).join(", ");
        item.appendChild(note);
      }
      list.appendChild(item);
      return content;
    }

    function messageText(content) {
      if (content === undefined || content === null) return "";
      if (typeof content === "string") return content;
      if (Array.isArray(content)) {
        return content.map(function (part) { return part.text !== undefined ? part.text : "[" + part.type + "]"; }).join("\n");
      }
      return JSON.stringify(content);
    }

    function messages() {
      var sent = [];
      var system = form.querySelector("#pg-system").value;
      if (system.trim()) sent.push(systemMessage(system));
      list.querySelectorAll(".pg-message").forEach(function (item) {
        var text = item.querySelector("textarea").value;
        var message = {};
        Object.keys(item._stored).forEach(function (name) { message[name] = item._stored[name]; });
        message.role = item.querySelector("select").value;
        // Stored content (parts too) goes out as it was unless its text was edited; a message
        // that only called tools gets no content it never had.
        if (text !== item._text || (!("content" in item._stored) && !item._stored.tool_calls)) message.content = text;
        sent.push(message);
      });
      return sent;
    }

    var storedSystem = null;
    function systemMessage(text) {
      var message = {};
      if (storedSystem) Object.keys(storedSystem).forEach(function (name) { message[name] = storedSystem[name]; });
      message.role = (storedSystem && storedSystem.role) || "system";
      if (!storedSystem || text !== messageText(storedSystem.content)) message.content = text;
      return message;
    }

    // The request, in the stored call's key order where it had one: its fields as the form
    // has them now, then whatever the form added.
    function body() {
      var others = JSON.parse(extra.value || "{}");
      var controlled = {model: modelSelect.value, messages: messages()};
      var temperature = form.querySelector("#pg-temperature").value;
      var maxTokens = form.querySelector("#pg-max-tokens").value;
      if (temperature !== "") controlled.temperature = Number(temperature);
      if (maxTokens !== "") controlled[tokenField] = Number(maxTokens);
      var stream = form.querySelector("#pg-stream").checked;
      if (stream || (stored && "stream" in stored)) controlled.stream = stream;
      if (stream && !("stream_options" in others)) others.stream_options = {include_usage: true};
      if (!stream) delete others.stream_options;
      var made = {};
      Object.keys(stored || {}).forEach(function (name) {
        if (name in controlled) made[name] = controlled[name];
        else if (name in others) made[name] = others[name];
      });
      Object.keys(controlled).forEach(function (name) { if (!(name in made)) made[name] = controlled[name]; });
      Object.keys(others).forEach(function (name) { if (!(name in made)) made[name] = others[name]; });
      return made;
    }

    function load(request) {
      var rest = {};
      Object.keys(request).forEach(function (name) {
        if (CONTROLLED.indexOf(name) < 0) rest[name] = request[name];
      });
      extra.value = JSON.stringify(rest, null, 2);
      if (Object.keys(rest).length) form.querySelector("[data-extra-wrap]").open = true;
      if (request.temperature !== undefined) form.querySelector("#pg-temperature").value = request.temperature;
      if (request[tokenField] !== undefined) form.querySelector("#pg-max-tokens").value = request[tokenField];
      form.querySelector("#pg-stream").checked = request.stream !== false;
      var sent = request.messages.slice();
      if (sent.length && (sent[0].role === "system" || sent[0].role === "developer") && typeof sent[0].content === "string") {
        storedSystem = sent.shift();
        form.querySelector("#pg-system").value = storedSystem.content;
      }
      sent.forEach(function (message) { addMessage(message); });
    }

    function fail(text) {
      formError.textContent = text;
      formError.hidden = !text;
    }

    keySelect.addEventListener("change", onKey);
    form.querySelector("[data-add-message]").addEventListener("click", function () { addMessage().focus(); });
    form.querySelector("[data-forget]").addEventListener("click", function () {
      forget(chosenKey().prefix);
      secretInput.value = "";
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var key = chosenKey();
      var secret = secretInput.value.trim();
      var problem = secretProblem(secret, key);
      if (problem) return fail(problem);
      var request;
      try { request = body(); } catch (e) { return fail("Other request fields are not valid JSON: " + e.message); }
      if (!request.messages.length) return fail("Add a message to send.");
      fail("");
      if (form.querySelector("#pg-remember").checked) remember(secret); else forget(key.prefix);
      var send = form.querySelector("[data-send]");
      send.disabled = true;
      answer.textContent = "";
      answer.setAttribute("data-chunks", "0");
      answer.setAttribute("data-state", "sending");
      callError.hidden = true;
      root.querySelector("[data-tool-calls]").textContent = "";
      chat(secret, request, function (text) {
        answer.textContent = text;
        answer.setAttribute("data-chunks", String(Number(answer.getAttribute("data-chunks")) + 1));
      }).then(function (result) {
        if (result.error) {
          callError.textContent = explain(result.status, result.error, result.headers);
          callError.hidden = false;
        }
        if (result.toolCalls.length) {
          root.querySelector("[data-tool-calls]").textContent = "Tool calls asked for: " + result.toolCalls.join(", ");
        }
        if (!result.text && !result.toolCalls.length && !result.error) answer.textContent = "(an empty answer)";
        showFacts(root, result, root.getAttribute("data-log-url"), root.getAttribute("data-api-log-url"));
        answer.setAttribute("data-state", result.error ? "failed" : "done");
      }, function (error) {
        callError.textContent = "The call did not reach the gateway: " + error.message;
        callError.hidden = false;
        answer.setAttribute("data-state", "failed");
      }).then(function () { send.disabled = false; });
    });

    if (stored) load(stored); else addMessage();
    fillModels(stored && stored.model);
    secretInput.value = remembered(chosenKey().prefix);
  }

  // --- a key's test call ---------------------------------------------------------------------

  // One tiny call with the key: on the Key issued page with the secret shown there, elsewhere
  // with the secret pasted.
  function keyTest(root) {
    var key = {name: root.getAttribute("data-key-name"), prefix: root.getAttribute("data-prefix")};
    var model = root.getAttribute("data-model");
    var shown = root.getAttribute("data-secret-from");
    var input = root.querySelector("[data-test-secret]");
    var outcome = root.querySelector("[data-test-outcome]");
    if (input && !input.value) input.value = remembered(key.prefix);
    root.querySelector("[data-test-key]").addEventListener("click", function () {
      var secret = shown ? document.querySelector(shown).textContent.trim() : input.value.trim();
      var problem = model ? secretProblem(secret, key) : "This key may use no chat model to test it with.";
      outcome.className = "small";
      if (problem) {
        outcome.textContent = problem;
        outcome.classList.add("bad");
        return;
      }
      outcome.textContent = "Sending one tiny call…";
      var request = {model: model, messages: [{role: "user", content: "Say OK."}], max_tokens: 8};
      chat(secret, request, function () {}).then(function (result) {
        var id = result.headers.get("x-nemo-request-id");
        outcome.textContent = "";
        if (result.error) {
          outcome.textContent = explain(result.status, result.error, result.headers);
          outcome.classList.add("bad");
        } else {
          outcome.textContent = "It works: " + model + " answered through " + (result.headers.get("x-nemo-deployment") || "?") +
            ", " + usageText(result.usage) + " tokens, $" + (result.headers.get("x-nemo-cost") || "?") + ". ";
          outcome.classList.add("good");
        }
        outcome.setAttribute("data-status", String(result.status));
        if (id) {
          var link = document.createElement("a");
          link.href = root.getAttribute("data-log-url").replace("REQUEST_ID", encodeURIComponent(id));
          link.textContent = "See the call in the log";
          outcome.appendChild(document.createTextNode(" "));
          outcome.appendChild(link);
        }
      }, function (error) {
        outcome.textContent = "The call did not reach the gateway: " + error.message;
        outcome.classList.add("bad");
      });
    });
  }

  // The Key issued page opens the playground with its key, the secret handed over in this tab.
  document.querySelectorAll("[data-open-playground]").forEach(function (link) {
    link.addEventListener("click", function () {
      var secret = document.querySelector(link.getAttribute("data-open-playground")).textContent.trim();
      remember(secret);
    });
  });
  document.querySelectorAll("[data-playground]").forEach(playground);
  document.querySelectorAll("[data-key-test]").forEach(keyTest);
})();
