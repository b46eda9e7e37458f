/* Processing sandbox dashboard: small progressive enhancements. No libraries, no inline script. */
(function () {
  "use strict";

  var COPIED_LABEL = "Copied";
  var RESET_AFTER_MS = 2000;
  var RESEND_AFTER_MS = 10000;
  var liveRegion = null;

  function announce(text) {
    if (!liveRegion) {
      liveRegion = document.createElement("div");
      liveRegion.className = "visually-hidden";
      liveRegion.setAttribute("aria-live", "polite");
      document.body.appendChild(liveRegion);
    }
    liveRegion.textContent = "";
    // A short pause makes screen readers announce the same text again on a repeated click.
    window.setTimeout(function () { liveRegion.textContent = text; }, 50);
  }

  function labelNode(button) {
    // The first direct text node holds the visible label; visually-hidden child spans are left alone.
    for (var node = button.firstChild; node; node = node.nextSibling) {
      if (node.nodeType === Node.TEXT_NODE && node.nodeValue.trim()) { return node; }
    }
    return button.insertBefore(document.createTextNode(""), button.firstChild);
  }

  function textToCopy(button) {
    if (button.hasAttribute("data-copy-text")) { return button.getAttribute("data-copy-text"); }
    var target = document.getElementById(button.getAttribute("data-copy-target"));
    if (!target) { return null; }
    return typeof target.value === "string" ? target.value : target.textContent.trim();
  }

  function copy(button) {
    var text = textToCopy(button);
    if (text === null) { return; }
    navigator.clipboard.writeText(text).then(function () {
      var node = labelNode(button);
      if (button.dataset.copyLabel === undefined) { button.dataset.copyLabel = node.nodeValue; }
      node.nodeValue = COPIED_LABEL;
      announce("Copied to the clipboard.");
      window.clearTimeout(button.copyTimer);
      button.copyTimer = window.setTimeout(function () {
        node.nodeValue = button.dataset.copyLabel;
        delete button.dataset.copyLabel;
      }, RESET_AFTER_MS);
    }, function () {
      announce("Could not copy. Select the text and copy it yourself.");
    });
  }

  if (navigator.clipboard && typeof navigator.clipboard.writeText === "function") {
    document.querySelectorAll("[data-copy-target], [data-copy-text]").forEach(function (button) {
      button.hidden = false;
      button.addEventListener("click", function () { copy(button); });
    });
  }

  // The browser's print dialog, for pages worth keeping on paper (the backup codes).
  document.querySelectorAll("[data-print]").forEach(function (button) {
    button.hidden = false;
    button.addEventListener("click", function () { window.print(); });
  });

  // Read-only values (the secret key) are selected whole on focus, ready to copy by hand.
  document.querySelectorAll("input[readonly], textarea[readonly]").forEach(function (input) {
    var justFocused = false;
    input.addEventListener("focus", function () { input.select(); justFocused = true; });
    // The click that gave the focus would otherwise drop the selection; later clicks select as usual.
    input.addEventListener("mouseup", function (event) {
      if (justFocused) { event.preventDefault(); }
      justFocused = false;
    });
  });

  // Header menus (<details class="menu">): close on an outside click or on Escape.
  function openMenus() {
    return Array.prototype.slice.call(document.querySelectorAll("details.menu[open]"));
  }

  document.addEventListener("click", function (event) {
    openMenus().forEach(function (menu) {
      if (!menu.contains(event.target)) { menu.open = false; }
    });
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape") { return; }
    openMenus().forEach(function (menu) {
      var hadFocus = menu.contains(document.activeElement) || document.activeElement === document.body;
      menu.open = false;
      var summary = menu.querySelector("summary");
      if (hadFocus && summary) { summary.focus(); }
    });
  });

  // Only one header menu open at a time ("toggle" does not bubble, so listen in the capture phase).
  document.addEventListener("toggle", function (event) {
    var opened = event.target;
    if (!opened.matches || !opened.matches("details.menu") || !opened.open) { return; }
    openMenus().forEach(function (menu) { if (menu !== opened) { menu.open = false; } });
  }, true);

  // A form sent back with errors: the first field to correct has the focus, as it would after a click on it.
  var invalid = document.querySelector("main form [aria-invalid=\"true\"]");
  if (invalid) { invalid.focus(); }

  // A menu left with Tab closes, as it does on an outside click.
  document.addEventListener("focusout", function (event) {
    var menu = event.target.closest && event.target.closest("details.menu[open]");
    if (menu && event.relatedTarget && !menu.contains(event.relatedTarget)) { menu.open = false; }
  });

  // Forms with data-confirm="message" ask before submitting.
  // A POST form is sent once: a second click would spend its 2FA code again and replace the answer to the first,
  // which for an activation is the only time its secret key is shown.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement)) { return; }
    var message = form.getAttribute("data-confirm");
    if (message && !window.confirm(message)) { event.preventDefault(); return; }
    if (form.method.toLowerCase() !== "post") { return; }
    if (form.dataset.submitted === "true") { event.preventDefault(); return; }
    form.dataset.submitted = "true";
    form.setAttribute("aria-busy", "true");
    // Still on this page long after (the browser's Stop pressed, an answer that never came): it can be sent again.
    window.setTimeout(function () { allowSending(form); }, RESEND_AFTER_MS);
  });

  function allowSending(form) {
    delete form.dataset.submitted;
    form.removeAttribute("aria-busy");
  }

  // Back to a page kept by the browser: its forms can be sent again.
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) { return; }
    document.querySelectorAll("form[data-submitted]").forEach(allowSending);
  });
})();
