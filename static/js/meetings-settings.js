// Settings > Meetings, progressively enhanced: Copy buttons for the links' public
// addresses, a new link's time zone from the browser, and the CalDAV fields only while
// a CalDAV calendar is chosen (that one is CSS: meetings.css).
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  document.addEventListener("DOMContentLoaded", function () {
    for (const button of document.querySelectorAll("button.copy[data-copy]")) {
      const field = document.getElementById(button.dataset.copy);
      if (!field || !navigator.clipboard) continue;
      button.hidden = false;
      button.addEventListener("click", function () {
        navigator.clipboard.writeText(field.value).then(
          function () {
            button.textContent = "Copied";
            button.classList.add("copied");
            window.setTimeout(function () {
              button.textContent = "Copy";
              button.classList.remove("copied");
            }, 2000);
          },
          function () {
            field.select();
          }
        );
      });
    }
    const zone = document.querySelector("select[data-detect=browser]");
    if (zone) {
      let browser = "";
      try {
        browser = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
      } catch (error) {
        browser = "";
      }
      if (Array.prototype.some.call(zone.options, (o) => o.value === browser)) zone.value = browser;
    }
    for (const field of document.querySelectorAll("input.link-url")) {
      field.addEventListener("focus", function () {
        field.select();
      });
    }
  });
})();
