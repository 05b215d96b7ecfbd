// The reply and note boxes of the inbox: @mention suggestions on the note box (an
// ARIA combobox: arrows move, Enter or Tab picks, Escape closes), the reply's
// formatting (bold, italic, link, lists; the server sanitises the HTML and makes the
// text part from it) and saved replies. Without JavaScript the plain text boxes work.
(function () {
  "use strict";

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  // --- @mentions -------------------------------------------------------------------------

  const mention = { area: null, items: [], active: -1, start: 0, seq: 0 };

  function mentionList() {
    return $("#mention-list");
  }

  // The "@na" being typed right before the caret, or null.
  function typedMention(area) {
    const before = area.value.slice(0, area.selectionStart);
    const match = /(^|[^\w.])@([\w.+-]*)$/.exec(before);
    if (!match) return null;
    return { start: before.length - match[2].length - 1, query: match[2] };
  }

  function closeMentions() {
    const list = mentionList();
    if (list) {
      list.hidden = true;
      list.textContent = "";
    }
    if (mention.area) {
      mention.area.setAttribute("aria-expanded", "false");
      mention.area.removeAttribute("aria-activedescendant");
    }
    mention.items = [];
    mention.active = -1;
  }

  function showActive() {
    const list = mentionList();
    $$("[role=option]", list).forEach((option, index) => {
      const on = index === mention.active;
      option.setAttribute("aria-selected", on ? "true" : "false");
      option.classList.toggle("active", on);
      if (on) {
        mention.area.setAttribute("aria-activedescendant", option.id);
        option.scrollIntoView({ block: "nearest" });
      }
    });
  }

  function renderMentions(people) {
    const list = mentionList();
    list.textContent = "";
    people.forEach((person, index) => {
      const option = document.createElement("li");
      option.id = "mention-option-" + index;
      option.setAttribute("role", "option");
      option.dataset.index = String(index);
      const name = document.createElement("span");
      name.className = "mention-name";
      name.textContent = person.name;
      const handle = document.createElement("span");
      handle.className = "mention-handle muted";
      handle.textContent = "@" + person.handle;
      option.append(name, handle);
      list.append(option);
    });
    list.hidden = false;
    mention.area.setAttribute("aria-expanded", "true");
    showActive();
  }

  async function suggest(area) {
    const typed = typedMention(area);
    mention.area = area;
    if (!typed) {
      closeMentions();
      return;
    }
    const seq = ++mention.seq;
    let people = [];
    try {
      const url = area.dataset.mentionUrl + "?q=" + encodeURIComponent(typed.query);
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      people = (await response.json()).results;
    } catch (error) {
      return; // offline: the note can still be written by hand
    }
    if (seq !== mention.seq) return; // a later keystroke asked again
    if (!people.length) {
      closeMentions();
      return;
    }
    mention.items = people;
    mention.start = typed.start;
    mention.active = 0;
    renderMentions(people);
  }

  function pickMention(index) {
    const area = mention.area;
    const person = mention.items[index];
    if (!area || !person) return;
    const before = area.value.slice(0, mention.start);
    const after = area.value.slice(area.selectionStart).replace(/^[\w.+-]*/, "");
    const inserted = "@" + person.handle + " ";
    area.value = before + inserted + after.replace(/^ /, "");
    const caret = before.length + inserted.length;
    area.setSelectionRange(caret, caret);
    closeMentions();
    area.focus();
  }

  document.addEventListener("input", (event) => {
    if (event.target.matches && event.target.matches("textarea[data-mention-url]")) {
      suggest(event.target);
    }
  });

  // Capture: before the inbox's own shortcuts (Escape, Ctrl+Enter) see the key.
  document.addEventListener("keydown", (event) => {
    const list = mentionList();
    if (!list || list.hidden || event.target !== mention.area) return;
    const count = mention.items.length;
    switch (event.key) {
      case "ArrowDown":
        mention.active = (mention.active + 1) % count;
        showActive();
        break;
      case "ArrowUp":
        mention.active = (mention.active - 1 + count) % count;
        showActive();
        break;
      case "Enter":
      case "Tab":
        if (event.ctrlKey || event.metaKey) return;
        pickMention(mention.active);
        break;
      case "Escape":
        closeMentions();
        break;
      default:
        return;
    }
    event.preventDefault();
    event.stopPropagation();
  }, true);

  document.addEventListener("mousedown", (event) => {
    const option = event.target.closest && event.target.closest("#mention-list [role=option]");
    if (option) {
      event.preventDefault(); // keep the focus in the note box
      pickMention(Number(option.dataset.index));
    }
  });

  document.addEventListener("focusout", (event) => {
    if (event.target === mention.area) closeMentions();
  });

  // --- The reply's formatting ------------------------------------------------------------

  // Formatted: the HTML goes, and the server makes the text part from it (links keep
  // their address). Plain: only the text goes, as a plain-text email.
  function syncEditor(form) {
    const editor = $("#reply-editor", form);
    const html = $("#reply-html", form);
    const area = $("#reply-text", form);
    const formatted = $("b, strong, i, em, a, ul, ol", editor) !== null;
    const text = editor.innerText.replace(/\u00a0/g, " ");
    html.value = formatted && text.trim() ? editor.innerHTML : "";
    area.value = formatted ? "" : text;
  }

  function setUpEditor(form) {
    const editor = $("#reply-editor", form);
    const area = $("#reply-text", form);
    if (!editor || !area || editor.dataset.ready) return;
    editor.dataset.ready = "1";
    if (area.value.trim()) editor.innerText = area.value; // a saved reply put there
    area.hidden = true;
    area.required = false;
    editor.hidden = false;
    const bar = $(".format-bar", form);
    if (bar) bar.hidden = false;
    syncEditor(form);
  }

  function setUpAll() {
    const form = $("#reply-form");
    if (form) setUpEditor(form);
    const area = $("textarea[data-mention-url]");
    if (area && !area.getAttribute("role")) {
      area.setAttribute("role", "combobox");
      area.setAttribute("aria-autocomplete", "list");
      area.setAttribute("aria-controls", "mention-list");
      area.setAttribute("aria-expanded", "false");
      area.setAttribute("aria-haspopup", "listbox");
    }
  }

  function format(form, kind) {
    const editor = $("#reply-editor", form);
    editor.focus();
    if (kind === "link") {
      const url = window.prompt("Link address (https://…)", "https://");
      if (!url || !/^(https?:\/\/|mailto:)\S+$/i.test(url.trim())) return;
      const selection = window.getSelection();
      if (selection && selection.isCollapsed) {
        document.execCommand("insertHTML", false, "");
        const link = document.createElement("a");
        link.href = url.trim();
        link.textContent = url.trim();
        selection.getRangeAt(0).insertNode(link);
        selection.collapse(link, 1);
      } else {
        document.execCommand("createLink", false, url.trim());
      }
    } else {
      document.execCommand(kind, false);
    }
    syncEditor(form);
  }

  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("#reply-form .fmt");
    if (button) {
      event.preventDefault();
      format(button.form, button.dataset.format);
    }
  });

  document.addEventListener("input", (event) => {
    if (event.target.id === "reply-editor") syncEditor(event.target.closest("form"));
  });

  document.addEventListener("keydown", (event) => {
    if (event.target.id !== "reply-editor") return;
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      event.stopPropagation();
      syncEditor(event.target.closest("form"));
      event.target.closest("form").requestSubmit();
    }
  }, true);

  // Sent: the form was reset (inbox.js); empty the editor with it.
  document.addEventListener("reset", (event) => {
    const editor = $("#reply-editor", event.target);
    if (editor) {
      editor.textContent = "";
      window.setTimeout(() => syncEditor(event.target), 0);
    }
  }, true);

  document.addEventListener("submit", (event) => {
    if (event.target.id === "reply-form" && $("#reply-editor", event.target)) {
      syncEditor(event.target);
    }
  }, true);

  // --- Saved replies ---------------------------------------------------------------------

  document.addEventListener("change", async (event) => {
    const select = event.target;
    if (!select.matches || !select.matches("#saved-reply") || !select.value) return;
    const form = select.form;
    try {
      const response = await fetch(select.dataset.url + select.value + "/", {
        headers: { Accept: "application/json" },
      });
      if (!response.ok) return;
      const saved = await response.json();
      const editor = $("#reply-editor", form);
      editor.focus();
      const selection = window.getSelection();
      if (!selection.rangeCount || !editor.contains(selection.anchorNode)) {
        selection.selectAllChildren(editor);
        selection.collapseToEnd();
      }
      document.execCommand("insertText", false, saved.text);
      syncEditor(form);
    } finally {
      select.value = "";
    }
  });

  document.addEventListener("htmx:afterSettle", setUpAll);
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", setUpAll);
  } else {
    setUpAll();
  }
})();
