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
