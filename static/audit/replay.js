// Replay player: plays a session at 1x/4x/16x of its recorded pace (CSP: static file only).
// The page is server-rendered per step; playing means following the "next" link after
// the recorded gap divided by the speed (gaps are capped at 10 s of wall time).
(function () {
  "use strict";
  var replay = document.getElementById("replay");
  if (!replay) return;
  var speed = parseInt(replay.dataset.play || "0", 10);
  var current = replay.querySelector("ol.timeline li.current");
  var next = document.getElementById("next-step");
  var status = document.getElementById("play-status");

  function go(href, withSpeed) {
    var url = new URL(href, window.location.href);
    if (withSpeed) { url.searchParams.set("play", String(withSpeed)); } else { url.searchParams.delete("play"); }
    window.location.href = url.toString();
  }

  if (speed > 0) {
    if (current && next && current.nextElementSibling) {
      var gap = parseFloat(current.nextElementSibling.dataset.offset) - parseFloat(current.dataset.offset);
      var delay = Math.min(Math.max((gap * 1000) / speed, 250), 10000);
      if (status) { status.textContent = "playing " + speed + "x, next in " + (delay / 1000).toFixed(1) + " s"; }
      window.setTimeout(function () { go(next.href, speed); }, delay);
    } else if (status) {
      status.textContent = "end of session";
    }
  }
  if (current && current.scrollIntoView) { current.scrollIntoView({ block: "nearest" }); }

  document.addEventListener("keydown", function (ev) {
    if (ev.target && /^(INPUT|TEXTAREA|SELECT|BUTTON)$/.test(ev.target.tagName)) return;
    if (ev.key === " " || ev.key === "Spacebar") {
      ev.preventDefault();
      var pause = document.getElementById("pause");
      if (pause) { go(pause.href, 0); return; }
      var play = replay.querySelector("a.play-speed");
      if (play) { go(play.href, parseInt(play.dataset.speed, 10)); }
    }
  });
})();
