// Email preferences: the sample email follows the font and size as they are picked.
// Without JavaScript the sample shows the saved font (classes in crm.css).
(function () {
  "use strict";

  function update() {
    const preview = document.getElementById("font-preview");
    const family = document.getElementById("id_font_family");
    const size = document.getElementById("id_font_size");
    if (!preview || !family || !size) return;
    const option = family.options[family.selectedIndex];
    if (option && option.dataset.stack) preview.style.fontFamily = option.dataset.stack;
    const px = parseInt(size.value, 10);
    if (px >= 8 && px <= 32) preview.style.fontSize = px + "px";
  }

  document.addEventListener("DOMContentLoaded", function () {
    for (const id of ["id_font_family", "id_font_size"]) {
      const field = document.getElementById(id);
      if (field) {
        field.addEventListener("input", update);
        field.addEventListener("change", update);
      }
    }
    update();
  });
})();
