// The public booking page, progressively enhanced (everything works without this file).
// - On a first visit (no zone asked for), show the times in the browser's own zone.
// - Changing the zone select shows the times in that zone straight away.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  function browserZone() {
    try {
      return Intl.DateTimeFormat().resolvedOptions().timeZone || "";
    } catch (error) {
      return "";
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    const form = document.getElementById("zone-form");
    if (!form) return;
    const select = form.querySelector("select[name=tz]");
    // The server marks a page asked for without a zone (never a form's answer).
    if (form.dataset.detect === "browser") {
      const params = new URLSearchParams(window.location.search);
      const zone = browserZone();
      const known = zone && Array.prototype.some.call(select.options, (o) => o.value === zone);
      if (known && zone !== select.value) {
        params.set("tz", zone);
        window.location.replace(window.location.pathname + "?" + params.toString());
        return;
      }
    }
    select.addEventListener("change", function () {
      form.submit();
    });
  });
})();
