// Small progressive enhancements; every page works without them.
(function () {
  "use strict";

  // Copy a secret shown once. The clipboard API needs a secure context (https or localhost);
  // elsewhere the text is selected so the user can copy it by hand.
  document.querySelectorAll("[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var source = document.querySelector(button.getAttribute("data-copy"));
      if (!source) return;
      var text = source.textContent.trim();
      var done = function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy"; }, 2000);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
      } else {
        selectText(source);
      }
    });
  });

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  // Forms that act at once (revoking a token) ask first.
  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
    });
  });

  // The sink form shows only the fields the chosen sink type takes.
  document.querySelectorAll("form[data-sink-form]").forEach(function (form) {
    var type = form.querySelector("select[name=type]");
    var show = function () {
      form.querySelectorAll("[data-sink-types]").forEach(function (field) {
        field.hidden = field.getAttribute("data-sink-types").split(" ").indexOf(type.value) < 0;
      });
    };
    type.addEventListener("change", show);
    show();
  });

  // The org switcher switches on change; its button remains for browsers without JS.
  document.querySelectorAll("form[data-autosubmit] select").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });
})();
