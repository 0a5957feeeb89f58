// The request log's detail panel: a row's call opens beside the list (a drawer on a desktop, a
// full-screen sheet on a phone) from a fragment of HTML, without leaving the list. The row's
// first link (its time) opens it, by click or by Enter; with a modifier key, or without this
// script, the link goes to the full call page as before. A native <dialog> keeps the focus
// inside while it is open, closes on Escape, and gives the focus back to the row's link.
(function () {
  "use strict";
  var panel = document.getElementById("call-panel");
  if (!panel || typeof panel.showModal !== "function") return;
  var body = panel.querySelector("[data-panel-body]");
  var opener = null;

  function open(link) {
    opener = link;
    fetch(link.getAttribute("data-panel"), { credentials: "same-origin", headers: { "X-Requested-With": "fetch" } })
      .then(function (response) {
        // Signed out meanwhile (a redirect to the sign-in page), or the call is gone: the full page says so.
        if (!response.ok || response.redirected) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        body.innerHTML = html;
        panel.setAttribute("aria-labelledby", "call-panel-title");
        if (!panel.open) panel.showModal();
        var close = body.querySelector("[data-panel-close]");
        if (close) close.focus();
      })
      .catch(function () { window.location.href = link.href; });
  }

  document.querySelectorAll("a[data-panel]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
      event.preventDefault();
      open(link);
    });
  });

  // A click elsewhere on a row opens its call too (its other links keep going where they go).
  document.querySelectorAll("tr[data-request-id]").forEach(function (row) {
    row.addEventListener("click", function (event) {
      var link = row.querySelector("a[data-panel]");
      if (link && !event.target.closest("a, button")) open(link);
    });
  });

  panel.addEventListener("click", function (event) {
    // The backdrop is the dialog itself, around its content.
    if (event.target === panel || event.target.closest("[data-panel-close]")) panel.close();
  });
  panel.addEventListener("close", function () {
    body.innerHTML = "";
    if (opener) opener.focus();
  });
})();
