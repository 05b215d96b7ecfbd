// The inbox screen: keyboard shortcuts, the selected row across list refreshes,
// forms that reset after sending, the thread kept scrolled to the newest message.
// Everything here is an extra: links and forms work without it.
(function () {
  "use strict";

  document.documentElement.classList.add("js");

  let selectedId = null; // the row j/k points at (kept when the list is refreshed)
  let listHadFocus = false;

  const $ = (selector, root) => (root || document).querySelector(selector);
  const $$ = (selector, root) => Array.from((root || document).querySelectorAll(selector));

  function rows() {
    return $$("#conv-list .row");
  }

  function currentId() {
    const pane = $("#conversation-pane");
    return pane ? pane.dataset.current || null : null;
  }

  function markRows() {
    const current = currentId();
    if (!selectedId || !rows().some((row) => row.dataset.id === selectedId)) {
      selectedId = current;
    }
    for (const row of rows()) {
      row.classList.toggle("current", row.dataset.id === current);
      row.classList.toggle("selected", row.dataset.id === selectedId);
      const link = $(".row-link", row);
      if (row.dataset.id === current) {
        link.setAttribute("aria-current", "true");
      } else {
        link.removeAttribute("aria-current");
      }
    }
  }

  // "Show more" appends pages below the polled first page. A conversation that moved
  // up into the first page since (new mail) is shown there: drop its stale copy below.
  function dropDuplicateRows() {
    const seen = new Set();
    for (const row of rows()) {
      if (seen.has(row.dataset.id)) row.remove();
      else seen.add(row.dataset.id);
    }
  }

  function select(row, focus) {
    if (!row) return;
    selectedId = row.dataset.id;
    markRows();
    row.scrollIntoView({ block: "nearest" });
    if (focus) $(".row-link", row).focus({ preventScroll: true });
  }

  function move(step) {
    const all = rows();
    if (!all.length) return;
    let index = all.findIndex((row) => row.dataset.id === selectedId);
    if (index < 0) index = step > 0 ? -1 : all.length;
    select(all[Math.max(0, Math.min(all.length - 1, index + step))], true);
  }

  function openSelected() {
    const row = rows().find((r) => r.dataset.id === selectedId);
    if (row) $(".row-link", row).click();
  }

  function compose(mode) {
    const radio = $(mode === "note" ? "#mode-note" : "#mode-reply");
    const editor = $("#reply-editor");
    const area = mode === "note"
      ? $("#note-text")
      : (editor && !editor.hidden ? editor : $("#reply-text"));
    if (radio) radio.checked = true;
    if (area) area.focus();
  }

  function showShortcuts() {
    const dialog = $("#shortcuts");
    if (dialog && !dialog.open) dialog.showModal();
  }

  function typing(target) {
    return (
      target instanceof HTMLElement &&
      (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))
    );
  }

  function scrollThreadToEnd(force) {
    const scroller = $("#thread-scroll");
    if (!scroller) return;
    if (force || scroller.dataset.atEnd !== "false") scroller.scrollTop = scroller.scrollHeight;
  }

  function localTimes(root) {
    // The server writes UTC; show the reader's own clock.
    const today = new Date().toDateString();
    for (const el of $$("time[datetime]", root)) {
      const when = new Date(el.getAttribute("datetime"));
      if (Number.isNaN(when.getTime())) continue;
      const sameDay = when.toDateString() === today;
      const sameYear = when.getFullYear() === new Date().getFullYear();
      el.textContent = sameDay
        ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
        : when.toLocaleDateString([], sameYear
          ? { day: "numeric", month: "short" }
          : { day: "numeric", month: "short", year: "numeric" });
      el.title = when.toLocaleString();
    }
  }

  function revealJsOnly(root) {
    for (const el of $$(".js-only[hidden]", root)) el.hidden = false;
  }

  document.addEventListener("keydown", (event) => {
    const dialog = $("#shortcuts");
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && event.target.form &&
        event.target.tagName === "TEXTAREA") {
      event.preventDefault();
      event.target.form.requestSubmit();
      return;
    }
    if (event.key === "Escape" && typing(event.target)) {
      event.target.blur();
      return;
    }
    if (!$("#inbox-app") || typing(event.target) || event.ctrlKey || event.metaKey || event.altKey) {
      return;
    }
    if (dialog && dialog.open) return;
    switch (event.key) {
      case "j":
      case "ArrowDown":
        move(1);
        break;
      case "k":
      case "ArrowUp":
        move(-1);
        break;
      case "Enter":
        if (event.target.closest && event.target.closest(".row-link")) return; // the link opens itself
        if (event.target.closest && event.target.closest("a, button")) return;
        openSelected();
        break;
      case "r":
        compose("reply");
        break;
      case "n":
        compose("note");
        break;
      case "e": {
        const button = $("#status-button");
        if (button) button.click();
        break;
      }
      case "/": {
        const search = $("#q");
        if (search) {
          search.focus();
          search.select();
        }
        break;
      }
      case "?":
        showShortcuts();
        break;
      default:
        return;
    }
    event.preventDefault();
  });

  document.addEventListener("click", (event) => {
    if (event.target.closest("#shortcuts-open")) {
      showShortcuts();
      return;
    }
    const row = event.target.closest("#conv-list .row");
    if (row) {
      selectedId = row.dataset.id;
      row.classList.remove("unread");
    }
  });

  document.addEventListener("scroll", (event) => {
    const scroller = event.target;
    if (scroller && scroller.id === "thread-scroll") {
      const gap = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight;
      scroller.dataset.atEnd = gap < 40 ? "true" : "false";
    }
  }, true);

  document.addEventListener("htmx:beforeSwap", (event) => {
    const target = event.detail.target;
    if (target && (target.id === "conv-list" || target.id === "list-top")) {
      listHadFocus = target.contains(document.activeElement);
    }
  });

  document.addEventListener("htmx:afterSettle", (event) => {
    const target = event.detail.elt;
    localTimes(document);
    revealJsOnly(document);
    dropDuplicateRows();
    markRows();
    if (listHadFocus) {
      listHadFocus = false;
      const row = rows().find((r) => r.dataset.id === selectedId);
      if (row) $(".row-link", row).focus({ preventScroll: true });
    }
    if (target && target.id === "conversation-pane") scrollThreadToEnd(true);
    if (target && target.id === "thread") scrollThreadToEnd(false);
  });

  // A reply or note was accepted: empty its form (a refused one keeps its text).
  document.addEventListener("inboxReset", (event) => {
    const form = event.target.closest ? event.target.closest("form") : null;
    if (form) form.reset();
  });

  function start() {
    localTimes(document);
    revealJsOnly(document);
    markRows();
    scrollThreadToEnd(true);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
