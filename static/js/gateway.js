// Calls through the gateway from the browser: the playground and a key's test call.
//
// A key's secret is stored hashed and shown once, so the dashboard cannot call as a key. The
// browser does, with the secret its user pasted (or the one the Key issued page shows), straight
// to the gateway on this host (/v1/chat/completions, /v1/responses or /v1/messages, the client API
// chosen): the same authentication, limits, budgets, routing and log as any client's call. The secret never goes to the dashboard; it is kept, if at all, in this
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

  // What each client API's answer says, read into one shape: the answer's text, the tool calls
  // it asked for ("name(arguments)") and its usage as {prompt_tokens, completion_tokens}.
  var ANSWERS = {
    "chat.completions": {
      whole: function (parsed, result) {
        var message = (parsed && parsed.choices && parsed.choices[0] && parsed.choices[0].message) || {};
        result.text = message.content || "";
        result.toolCalls = (message.tool_calls || []).map(function (call) {
          return call["function"].name + "(" + call["function"].arguments + ")";
        });
        result.usage = parsed && parsed.usage;
      },
      event: function (chunk, result, calls, onText) {
        if (chunk.error) { result.error = chunk.error; return; }
        if (chunk.usage) result.usage = chunk.usage;
        var delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (!delta) return;
        (delta.tool_calls || []).forEach(function (call) {
          var known = calls[call.index] = calls[call.index] || {name: "", arguments: ""};
          if (call["function"] && call["function"].name) known.name = call["function"].name;
          if (call["function"] && call["function"].arguments) known.arguments += call["function"].arguments;
        });
        if (delta.content) added(result, delta.content, onText);
      }
    },
    "responses": {
      whole: function (parsed, result) {
        ((parsed && parsed.output) || []).forEach(function (item) {
          if (item.type === "message") {
            (item.content || []).forEach(function (part) { if (part.type === "output_text") result.text += part.text; });
          } else if (item.type === "function_call") result.toolCalls.push(item.name + "(" + item.arguments + ")");
        });
        result.usage = tokens(parsed && parsed.usage);
      },
      event: function (chunk, result, calls, onText) {
        var item = chunk.item || {};
        if (chunk.type === "response.output_text.delta") added(result, chunk.delta || "", onText);
        else if (chunk.type === "response.output_item.done" && item.type === "function_call") {
          calls[chunk.output_index] = {name: item.name, arguments: item.arguments || ""};
        } else if (chunk.type === "response.completed" || chunk.type === "response.incomplete") {
          result.usage = tokens(chunk.response && chunk.response.usage);
        } else if (chunk.type === "response.failed") {
          result.error = (chunk.response && chunk.response.error) || {message: "The response failed."};
        } else if (chunk.type === "error") result.error = chunk.error || chunk;
      }
    },
    "messages": {
      whole: function (parsed, result) {
        ((parsed && parsed.content) || []).forEach(function (block) {
          if (block.type === "text") result.text += block.text;
          else if (block.type === "tool_use") result.toolCalls.push(block.name + "(" + JSON.stringify(block.input) + ")");
        });
        result.usage = tokens(parsed && parsed.usage);
      },
      event: function (chunk, result, calls, onText) {
        var usage = result.usage || {prompt_tokens: 0, completion_tokens: 0};
        var delta = chunk.delta || {};
        if (chunk.type === "message_start" && chunk.message && chunk.message.usage) {
          usage.prompt_tokens = chunk.message.usage.input_tokens || 0;
          result.usage = usage;
        } else if (chunk.type === "content_block_start" && chunk.content_block.type === "tool_use") {
          calls[chunk.index] = {name: chunk.content_block.name, arguments: ""};
        } else if (chunk.type === "content_block_delta" && delta.type === "text_delta") added(result, delta.text, onText);
        else if (chunk.type === "content_block_delta" && delta.type === "input_json_delta" && calls[chunk.index]) {
          calls[chunk.index].arguments += delta.partial_json;
        } else if (chunk.type === "message_delta" && chunk.usage) {
          usage.completion_tokens = chunk.usage.output_tokens || 0;
          result.usage = usage;
        } else if (chunk.type === "error") result.error = chunk.error;
      }
    }
  };
  var PATHS = {"chat.completions": "/v1/chat/completions", "responses": "/v1/responses", "messages": "/v1/messages"};

  function added(result, text, onText) {
    result.text += text;
    result.chunks += 1;
    onText(result.text);
  }

  // The Responses and Messages APIs' usage in Chat Completions' words.
  function tokens(usage) {
    return usage ? {prompt_tokens: usage.input_tokens, completion_tokens: usage.output_tokens} : null;
  }

  // One call of a client API (``api``: chat.completions, responses or messages). ``onText(text)``
  // gets the answer so far each time a piece of it arrives. Resolves to {status, headers, text,
  // toolCalls, usage, error, chunks}; never rejects for an answer the gateway gave (a network
  // failure does).
  function call(api, secret, body, onText) {
    var answers = ANSWERS[api];
    return fetch(PATHS[api], {
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
            // Each API's errors carry an "error" object with a message (Anthropic's inside its own envelope).
            result.error = (parsed && parsed.error) || {message: raw.slice(0, 300)};
            return result;
          }
          answers.whole(parsed, result);
          result.chunks = 1;
          onText(result.text);
          return result;
        });
      }
      return readStream(response, result, onText, answers.event);
    });
  }

  function chat(secret, body, onText) {
    return call("chat.completions", secret, body, onText);
  }

  function readStream(response, result, onText, onEvent) {
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
      onEvent(chunk, result, calls, onText);
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

  // Each client API's request, as the form writes it: the fields the form controls (the rest go
  // out as the "other fields" say), its output limit's name and who may speak in its conversation.
  var REQUESTS = {
    "chat.completions": {controlled: ["model", "messages", "temperature", "max_tokens", "max_completion_tokens",
                                      "stream"],
                         roles: ["user", "assistant", "tool", "developer", "system"], tokens: "max_tokens",
                         tokensHelp: ""},
    "responses": {controlled: ["model", "input", "instructions", "temperature", "max_output_tokens", "stream"],
                  roles: ["user", "assistant", "developer", "system"], tokens: "max_output_tokens", tokensHelp: ""},
    // Anthropic's Messages API requires max_tokens.
    "messages": {controlled: ["model", "messages", "system", "temperature", "max_tokens", "stream"],
                 roles: ["user", "assistant"], tokens: "max_tokens", tokensHelp: "Required here; 1024 if left empty.",
                 defaultTokens: 1024}
  };

  function playground(root) {
    var keys = JSON.parse(document.getElementById("pg-keys").textContent);
    var stored = JSON.parse(document.getElementById("pg-stored").textContent);
    var storedApi = JSON.parse(document.getElementById("pg-stored-api").textContent);
    var form = root.querySelector("[data-playground-form]");
    var apiSelect = form.querySelector("#pg-api");
    var keySelect = form.querySelector("#pg-key");
    var secretInput = form.querySelector("#pg-secret");
    var modelSelect = form.querySelector("#pg-model");
    var list = form.querySelector("[data-messages]");
    var extra = form.querySelector("#pg-extra");
    var preview = form.querySelector("[data-request-preview]");
    var formError = form.querySelector("[data-pg-error]");
    var answer = root.querySelector("[data-answer]");
    var callError = root.querySelector("[data-call-error]");
    // The stored call's own choices that the form has no control for, kept as they were.
    var storedSystem = null;  // a stored chat call's system message
    var storedBlocks = null;  // a stored Messages call's system, as text blocks
    var inputWasText = false;  // a stored Responses call's input was a string

    function api() { return apiSelect.value; }

    function shape() { return REQUESTS[api()]; }

    // The output limit's name: a stored chat call's own (max_completion_tokens or max_tokens).
    function tokenField() {
      if (api() === "chat.completions" && stored && storedApi === api() && "max_completion_tokens" in stored &&
          !("max_tokens" in stored)) return "max_completion_tokens";
      return shape().tokens;
    }

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

    // The roles the chosen API takes, keeping a message's role where it may keep it.
    function fillRoles(select, wanted) {
      var roles = shape().roles.slice();
      if (wanted && roles.indexOf(wanted) < 0) roles.push(wanted);
      select.textContent = "";
      roles.forEach(function (name) {
        var option = document.createElement("option");
        option.value = option.textContent = name;
        select.appendChild(option);
      });
      select.value = wanted || "user";
    }

    function removable(item) {
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link small";
      remove.textContent = "Remove";
      remove.addEventListener("click", function () { item.remove(); showRequest(); });
      return remove;
    }

    function addMessage(message) {
      var item = document.createElement("li");
      item.className = "pg-message";
      var role = document.createElement("select");
      role.setAttribute("aria-label", "Role");
      var content = document.createElement("textarea");
      content.rows = 3;
      content.setAttribute("aria-label", "Message");
      // The message as it was stored, so what the form does not show (tool calls, a tool call's
      // id, content parts or blocks) goes out again as it came.
      item._stored = message || {};
      fillRoles(role, message && message.role);
      content.value = messageText(message && message.content);
      item._text = content.value;
      var head = document.createElement("div");
      head.className = "row spread";
      head.appendChild(role);
      head.appendChild(removable(item));
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

    // A Responses input item that is no message (a function call, its output): sent as it was.
    function addItem(stored) {
      var item = document.createElement("li");
      item.className = "pg-message";
      item._stored = stored;
      item._kept = true;
      var head = document.createElement("div");
      head.className = "row spread";
      var what = document.createElement("span");
      what.className = "small muted";
      what.textContent = "A " + (stored.type || "stored") + " item" + (stored.name ? " (" + stored.name + ")" : "") +
        ", sent as it was";
      head.appendChild(what);
      head.appendChild(removable(item));
      item.appendChild(head);
      list.appendChild(item);
    }

    function messageText(content) {
      if (content === undefined || content === null) return "";
      if (typeof content === "string") return content;
      if (Array.isArray(content)) {
        return content.map(function (part) { return part.text !== undefined ? part.text : "[" + part.type + "]"; }).join("\n");
      }
      return JSON.stringify(content);
    }

    // The conversation's messages as the form has them (the system prompt aside).
    function conversation() {
      var sent = [];
      list.querySelectorAll(".pg-message").forEach(function (item) {
        if (item._kept) { sent.push(item._stored); return; }
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

    function systemMessage(text) {
      var message = {};
      if (storedSystem) Object.keys(storedSystem).forEach(function (name) { message[name] = storedSystem[name]; });
      message.role = (storedSystem && storedSystem.role) || "system";
      if (!storedSystem || text !== messageText(storedSystem.content)) message.content = text;
      return message;
    }

    // The system prompt, in the chosen API's place for it: a first message (Chat Completions),
    // ``instructions`` (Responses) or ``system`` (Messages; its stored blocks kept unless edited).
    function withSystem(controlled, system) {
      var messages = conversation();
      if (api() === "chat.completions") {
        if (system.trim()) messages.unshift(systemMessage(system));
        controlled.messages = messages;
      } else if (api() === "responses") {
        if (system.trim()) controlled.instructions = system;
        var only = messages.length === 1 && messages[0].role === "user" && Object.keys(messages[0]).length === 2;
        controlled.input = inputWasText && only ? messages[0].content : messages;
      } else {
        if (system.trim()) {
          controlled.system = storedBlocks && system === messageText(storedBlocks) ? storedBlocks : system;
        }
        controlled.messages = messages;
      }
    }

    // The request in the chosen API's shape, in the stored call's key order where it had one
    // (and is of the same API): its fields as the form has them now, then whatever the form added.
    function body() {
      var others = JSON.parse(extra.value || "{}");
      var controlled = {model: modelSelect.value};
      withSystem(controlled, form.querySelector("#pg-system").value);
      var temperature = form.querySelector("#pg-temperature").value;
      var maxTokens = form.querySelector("#pg-max-tokens").value;
      if (temperature !== "") controlled.temperature = Number(temperature);
      if (maxTokens !== "") controlled[tokenField()] = Number(maxTokens);
      else if (shape().defaultTokens) controlled[tokenField()] = shape().defaultTokens;
      var own = stored && storedApi === api() ? stored : {};
      var stream = form.querySelector("#pg-stream").checked;
      if (stream || "stream" in own) controlled.stream = stream;
      if (api() === "chat.completions" && stream && !("stream_options" in others)) {
        others.stream_options = {include_usage: true};
      }
      if (api() !== "chat.completions" || !stream) delete others.stream_options;
      var made = {};
      Object.keys(own).forEach(function (name) {
        if (name in controlled) made[name] = controlled[name];
        else if (name in others) made[name] = others[name];
      });
      Object.keys(controlled).forEach(function (name) { if (!(name in made)) made[name] = controlled[name]; });
      Object.keys(others).forEach(function (name) { if (!(name in made)) made[name] = others[name]; });
      return made;
    }

    function conversationOf(request) {
      if (storedApi !== "responses") return request.messages.slice();
      if (typeof request.input === "string") {
        inputWasText = true;
        return [{role: "user", content: request.input}];
      }
      return request.input.slice();
    }

    function load(request) {
      var rest = {};
      Object.keys(request).forEach(function (name) {
        if (REQUESTS[storedApi].controlled.indexOf(name) < 0) rest[name] = request[name];
      });
      extra.value = JSON.stringify(rest, null, 2);
      if (Object.keys(rest).length) form.querySelector("[data-extra-wrap]").open = true;
      if (request.temperature !== undefined) form.querySelector("#pg-temperature").value = request.temperature;
      if (request[tokenField()] !== undefined) form.querySelector("#pg-max-tokens").value = request[tokenField()];
      form.querySelector("#pg-stream").checked = request.stream !== false;
      var system = form.querySelector("#pg-system");
      var sent = conversationOf(request);
      if (storedApi === "responses" && typeof request.instructions === "string") system.value = request.instructions;
      if (storedApi === "messages" && request.system !== undefined) {
        storedBlocks = Array.isArray(request.system) ? request.system : null;
        system.value = messageText(request.system);
      }
      if (storedApi === "chat.completions" && sent.length && (sent[0].role === "system" || sent[0].role === "developer") &&
          typeof sent[0].content === "string") {
        storedSystem = sent.shift();
        system.value = storedSystem.content;
      }
      sent.forEach(function (message) { if (message.role) addMessage(message); else addItem(message); });
    }

    // The request as it will go out, beside the form, in the chosen API's shape.
    function showRequest() {
      form.querySelector("[data-api-path]").textContent = PATHS[api()];
      form.querySelector("[data-max-tokens-help]").textContent = shape().tokensHelp;
      try { preview.textContent = JSON.stringify(body(), null, 2); } catch (e) {
        preview.textContent = "Other request fields are not valid JSON: " + e.message;
      }
    }

    function onApi() {
      list.querySelectorAll(".pg-message select").forEach(function (select) { fillRoles(select, select.value); });
      showRequest();
    }

    function fail(text) {
      formError.textContent = text;
      formError.hidden = !text;
    }

    // Why the request cannot go to the chosen API as it is, or "".
    function requestProblem(request) {
      var messages = api() === "responses" ? request.input : request.messages;
      if (!messages.length) return "Add a message to send.";
      var allowed = shape().roles;
      var wrong = (Array.isArray(messages) ? messages : []).filter(function (message) {
        return message.role && allowed.indexOf(message.role) < 0;
      })[0];
      if (wrong) {
        return "The " + apiSelect.options[apiSelect.selectedIndex].textContent.split(" · ")[0] + " API takes no " +
          wrong.role + " messages (" + allowed.join(", ") + "); put a system prompt in its own field.";
      }
      return "";
    }

    apiSelect.addEventListener("change", onApi);
    keySelect.addEventListener("change", onKey);
    form.addEventListener("input", showRequest);
    form.addEventListener("change", showRequest);
    form.querySelector("[data-add-message]").addEventListener("click", function () {
      addMessage().focus();
      showRequest();
    });
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
      problem = requestProblem(request);
      if (problem) return fail(problem);
      fail("");
      if (form.querySelector("#pg-remember").checked) remember(secret); else forget(key.prefix);
      var send = form.querySelector("[data-send]");
      send.disabled = true;
      answer.textContent = "";
      answer.setAttribute("data-chunks", "0");
      answer.setAttribute("data-state", "sending");
      callError.hidden = true;
      root.querySelector("[data-tool-calls]").textContent = "";
      call(api(), secret, request, function (text) {
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
    showRequest();
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
