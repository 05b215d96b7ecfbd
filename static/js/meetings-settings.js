// Settings > Meetings, progressively enhanced: Copy buttons for the links' public
// addresses, and the CalDAV fields only while a CalDAV calendar is chosen.
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
    for (const field of document.querySelectorAll("input.link-url")) {
      field.addEventListener("focus", function () {
        field.select();
      });
    }
  });
})();
