// The top navigation's Menu button on a phone. The menu is a <details>, so it opens
// and closes without JavaScript; this file only adds what a <details> lacks:
// aria-expanded on the button, Escape to close (focus back on the button), closing
// when a click or focus lands elsewhere, and, in browsers that cannot show a closed
// <details>' content on a wide screen (no ::details-content), keeping it open there.
(function () {
  "use strict";

  const PHONE = window.matchMedia("(max-width: 640px)");
  let wideFallback = false;
  try {
    wideFallback = !CSS.supports("selector(::details-content)");
  } catch (error) {
    wideFallback = true;
  }

  function sync(menu) {
    const button = menu.querySelector("summary");
    if (button) button.setAttribute("aria-expanded", menu.open ? "true" : "false");
  }

  function fit(menu) {
    if (wideFallback) menu.open = !PHONE.matches;
    sync(menu);
  }

  document.addEventListener("DOMContentLoaded", function () {
    const menu = document.getElementById("menu");
    if (!menu) return;
    fit(menu);
    menu.addEventListener("toggle", function () {
      sync(menu);
    });
    PHONE.addEventListener("change", function () {
      if (!wideFallback) menu.open = false;
      fit(menu);
    });
    menu.addEventListener("keydown", function (event) {
      if (event.key === "Escape" && menu.open && PHONE.matches) {
        menu.open = false;
        menu.querySelector("summary").focus();
        event.stopPropagation();
      }
    });
    function closeIfOutside(event) {
      if (menu.open && PHONE.matches && !menu.contains(event.target)) menu.open = false;
    }
    document.addEventListener("click", closeIfOutside);
    document.addEventListener("focusin", closeIfOutside);
  });
})();
