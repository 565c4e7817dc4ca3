// Outpost back office: progressive enhancement only. Every page works with
// scripts off; this adds a confirmation to forms that ask for one.
"use strict";
document.addEventListener("submit", function (ev) {
  var f = ev.target;
  var msg = f && f.getAttribute && f.getAttribute("data-confirm");
  if (msg && !window.confirm(msg)) {
    ev.preventDefault();
  }
});

// The Today page follows the ledger's live tail (/today/live, the API's
// GET /v1/events/stream as this session): when events commit, it fetches
// the page again and swaps in its figures, at most every half second.
(function () {
  var box = document.getElementById("today");
  if (!box || !window.EventSource || !window.fetch || !window.DOMParser) {
    return;
  }
  var asOf = document.getElementById("as-of");
  var src = new EventSource(box.getAttribute("data-live") + "?after=" + encodeURIComponent(asOf ? asOf.textContent : "0"));
  var timer = null;
  var updates = 0;
  function state(text) {
    var el = document.getElementById("live-state");
    if (el) { el.textContent = text; }
  }
  function refresh() {
    timer = null;
    fetch("/today", { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { if (!r.ok) { throw new Error("status " + r.status); } return r.text(); })
      .then(function (html) {
        var next = new DOMParser().parseFromString(html, "text/html").getElementById("today");
        if (!next) { return; }
        box.innerHTML = next.innerHTML;
        updates++;
        box.setAttribute("data-updates", String(updates));
        state("live: updated " + new Date().toLocaleTimeString());
      })
      .catch(function (e) { state("live: could not refresh (" + e.message + ")"); });
  }
  src.addEventListener("open", function () { state("live"); });
  src.addEventListener("event", function () {
    if (timer === null) { timer = setTimeout(refresh, 500); }
  });
  src.addEventListener("close", function (ev) {
    state("live tail closed by the server; reload the page");
    src.close();
  });
  src.onerror = function () { state("live: reconnecting…"); };
})();
