/* im-prober status page: the colour theme switch and the refresh without a full reload.
   Everything else works without this file. No build step, no dependency. */
(function () {
  "use strict";
  var KEY = "im-prober-theme";
  var ORDER = ["auto", "light", "dark"];
  var root = document.documentElement;

  function stored() {
    try {
      var value = localStorage.getItem(KEY);
      return ORDER.indexOf(value) >= 0 ? value : "auto";
    } catch (e) {
      return "auto";
    }
  }

  function apply(theme) {
    if (theme === "auto") root.removeAttribute("data-theme");
    else root.setAttribute("data-theme", theme);
  }

  apply(stored()); // before the first paint: this file is loaded in <head>

  function setupTheme() {
    var button = document.getElementById("theme");
    if (!button) return;
    function show() {
      var theme = stored();
      button.textContent = "Theme: " + theme;
      button.setAttribute("aria-label", "Colour theme: " + theme + ". Change it");
    }
    button.hidden = false;
    show();
    button.addEventListener("click", function () {
      var next = ORDER[(ORDER.indexOf(stored()) + 1) % ORDER.length];
      try {
        localStorage.setItem(KEY, next);
      } catch (e) {
        /* private mode: the switch lasts for this page only */
      }
      apply(next);
      show();
    });
  }

  function setupRefresh() {
    var seconds = parseInt(document.body.getAttribute("data-refresh"), 10);
    var main = document.getElementById("main");
    var updated = document.getElementById("updated");
    if (!(seconds >= 1) || !main) return;
    var busy = false;

    function refresh() {
      if (busy || document.hidden) return;
      // Someone is reading with the keyboard inside the page: do not move their focus.
      var active = document.activeElement;
      if (active && active !== main && main.contains(active) && active.tagName !== "SUMMARY") return;
      busy = true;
      fetch(location.href, { headers: { Accept: "text/html" }, cache: "no-store", credentials: "same-origin" })
        .then(function (response) {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.text();
        })
        .then(function (text) {
          var doc = new DOMParser().parseFromString(text, "text/html");
          var fresh = doc.getElementById("main");
          if (!fresh) throw new Error("no content");
          var open = {};
          main.querySelectorAll("details[id]").forEach(function (d) { open[d.id] = d.open; });
          var nodes = Array.prototype.slice.call(fresh.childNodes).map(function (n) {
            return document.adoptNode(n);
          });
          main.replaceChildren.apply(main, nodes);
          main.querySelectorAll("details[id]").forEach(function (d) {
            if (open[d.id] !== undefined) d.open = open[d.id];
          });
          document.title = doc.title;
          var note = doc.getElementById("updated");
          if (updated && note && updated.textContent !== note.textContent) updated.textContent = note.textContent;
          document.body.classList.remove("stale");
          document.body.setAttribute("data-refreshed", String(Date.now()));
        })
        .catch(function () {
          document.body.classList.add("stale");
          if (updated) updated.textContent = "Cannot reach the prober; showing older figures";
        })
        .then(function () { busy = false; });
    }

    setInterval(refresh, seconds * 1000);
    document.addEventListener("visibilitychange", function () {
      if (!document.hidden) refresh();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupTheme();
    setupRefresh();
  });
})();
