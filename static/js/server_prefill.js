/* Connect forms: fill in the IMAP and SMTP servers when the address changes.
 *
 * Progressive enhancement: without this script the form's "Fill in server
 * settings" button posts the form back and the page comes back filled in. With
 * it, that button asks the same endpoint (data-prefill-url on the address field)
 * without leaving the page, and so does every change of the address. A field the
 * user has typed in is never overwritten; one this script filled is, when the
 * address changes again.
 */
(function () {
  "use strict";

  var SERVERS = ["imap", "smtp"];
  var KEYS = ["host", "port", "security", "username"];

  function field(form, name) {
    var element = form.elements.namedItem(name);
    return element && element.tagName ? element : null;
  }

  function setValue(element, value) {
    if (!element || element.dataset.typed === "1") return;
    element.value = String(value);
    element.dataset.filled = "1";
  }

  function fill(form, answer) {
    var note = form.querySelector(".prefill-note");
    if (note) note.textContent = answer.note || "";
    if (!answer.found) return;
    SERVERS.forEach(function (server) {
      KEYS.forEach(function (key) {
        setValue(field(form, server + "_" + key), answer[server][key]);
      });
    });
  }

  function lookUp(input) {
    var form = input.form;
    var address = input.value.trim();
    if (!form || !address) return;
    var url = input.dataset.prefillUrl + "?address=" + encodeURIComponent(address);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        return response.ok ? response.json() : null;
      })
      .then(function (answer) {
        if (answer && input.value.trim() === address) fill(form, answer);
      })
      .catch(function () {
        /* No answer: the user types the servers in, as without this script. */
      });
  }

  function addressOf(form) {
    return form.querySelector("input[name=address][data-prefill-url]");
  }

  document.addEventListener("change", function (event) {
    var target = event.target;
    if (target.matches && target.matches("input[name=address][data-prefill-url]")) {
      lookUp(target);
    }
  });

  // Remember what the user typed so a later fill leaves it alone.
  document.addEventListener("input", function (event) {
    var target = event.target;
    if (!target.form || !addressOf(target.form) || target.name === "address") return;
    target.dataset.typed = "1";
  });

  function enhance(root) {
    root.querySelectorAll("button.fill-servers").forEach(function (button) {
      // No longer a submit button: Enter in the form connects, as it should.
      button.type = "button";
      button.removeAttribute("name");
      button.addEventListener("click", function () {
        var input = button.form && addressOf(button.form);
        if (input) lookUp(input);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    enhance(document);
  });
})();
