/* Destructive actions ask first (core/confirm.py).
 *
 * A <form method="get" data-confirm> (or an <a data-confirm>) opens its action's
 * confirmation page. With
 * JavaScript that page's form is fetched into one modal <dialog> instead: focus stays
 * inside it, Escape or Cancel closes it and gives focus back to the button, and the
 * submit button waits until a name to type (data-confirm-match) matches. The server
 * checks everything again; without this file the page itself asks.
 */
(function () {
  "use strict";

  var dialog = null;
  var opener = null;
  var FOCUSABLE = "a[href], button:not([disabled]), input:not([type=hidden]):not([disabled]), select, textarea, [tabindex]:not([tabindex='-1'])";

  function theDialog() {
    if (dialog) return dialog;
    dialog = document.createElement("dialog");
    dialog.className = "confirm-dialog";
    dialog.id = "confirm-dialog";
    dialog.addEventListener("close", function () {
      dialog.replaceChildren();
      if (opener && document.contains(opener)) opener.focus();
      opener = null;
    });
    dialog.addEventListener("click", function (event) {
      var cancel = event.target.closest("[data-confirm-cancel]");
      if (cancel) {
        event.preventDefault();
        dialog.close();
      }
    });
    dialog.addEventListener("keydown", function (event) {
      if (event.key !== "Tab") return;
      var items = Array.prototype.filter.call(dialog.querySelectorAll(FOCUSABLE), function (el) {
        return el.offsetParent !== null;
      });
      if (!items.length) return;
      var first = items[0];
      var last = items[items.length - 1];
      if (event.shiftKey && document.activeElement === first) {
        event.preventDefault();
        last.focus();
      } else if (!event.shiftKey && document.activeElement === last) {
        event.preventDefault();
        first.focus();
      }
    });
    dialog.addEventListener("input", matchTyped);
    document.body.appendChild(dialog);
    return dialog;
  }

  function matchTyped() {
    var input = dialog.querySelector("[data-confirm-match]");
    var go = dialog.querySelector(".confirm-go");
    if (!input || !go) return;
    go.disabled = input.value.trim() !== input.getAttribute("data-confirm-match").trim();
  }

  function questionUrl(form) {
    var url = new URL(form.getAttribute("action") || window.location.href, window.location.href);
    new FormData(form).forEach(function (value, name) {
      if (typeof value === "string") url.searchParams.append(name, value);
    });
    return url;
  }

  function ask(form, submitter, href) {
    var url = href ? new URL(href, window.location.href) : questionUrl(form);
    fetch(url, { headers: { "X-Confirm-Dialog": "1" }, credentials: "same-origin" })
      .then(function (response) {
        // Sent elsewhere (nothing to ask, e.g. no target chosen): show that page.
        if (!response.ok || response.redirected) throw new Error(String(response.status));
        return response.text();
      })
      .then(function (html) {
        var parsed = new DOMParser().parseFromString(html, "text/html");
        if (!parsed.querySelector("form.confirm-form")) throw new Error("no question");
        var box = theDialog();
        opener = submitter || (form && form.querySelector("button, [type=submit]"));
        box.replaceChildren.apply(box, Array.prototype.slice.call(parsed.body.childNodes));
        box.setAttribute("aria-labelledby", "confirm-title");
        box.setAttribute("aria-describedby", "confirm-lost");
        box.showModal();
        matchTyped();
        var first = box.querySelector("[data-confirm-match]") || box.querySelector("[data-confirm-cancel]");
        if (first) first.focus();
      })
      .catch(function () {
        window.location.assign(url.toString()); // the page asks (or says why not) instead
      });
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-confirm]");
    if (!link || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    event.preventDefault();
    ask(null, link, link.href);
  });

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.hasAttribute("data-confirm")) return;
    event.preventDefault();
    ask(form, event.submitter);
  });
})();
