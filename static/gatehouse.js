// Gatehouse UI behaviour. No inline scripts anywhere (CSP script-src 'self').
(function () {
  "use strict";
  // Countdowns to approval deadlines.
  function tick() {
    document.querySelectorAll(".countdown[data-deadline]").forEach(function (el) {
      var left = Math.max(0, Math.round((Date.parse(el.dataset.deadline) - Date.now()) / 1000));
      el.textContent = left + " s";
    });
  }
  setInterval(tick, 1000);
  // Replay: arrow keys step through a session's exchanges.
  document.addEventListener("keydown", function (ev) {
    if (ev.target && /^(INPUT|TEXTAREA|SELECT)$/.test(ev.target.tagName)) return;
    var id = ev.key === "ArrowLeft" ? "prev-step" : ev.key === "ArrowRight" ? "next-step" : null;
    var link = id && document.getElementById(id);
    if (link) { window.location.href = link.href; }
  });
  // Console: forms marked .confirm ask before posting (delete, revoke).
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.classList && form.classList.contains("confirm") && !window.confirm(form.dataset.confirm || "Are you sure?")) {
      ev.preventDefault();
    }
  }, true);
})();
