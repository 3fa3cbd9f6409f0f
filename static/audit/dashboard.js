// Audit dashboard charts (Chart.js 4, vendored). Data comes from the page's
// json_script element; no inline script (CSP script-src 'self').
(function () {
  "use strict";
  var el = document.getElementById("dashboard-data");
  if (!el || typeof window.Chart === "undefined") return;
  var data = JSON.parse(el.textContent);
  var COLORS = {
    allowed: "#1f7a3d", approved: "#2457c5", denied: "#b3261e", approval_denied: "#e07b39",
    expired: "#9a6700", error: "#6b7280"
  };
  var PALETTE = ["#2457c5", "#1f7a3d", "#b3261e", "#9a6700", "#7c3aed", "#0e7490", "#be185d", "#4b5563", "#65a30d", "#ea580c"];
  var base = { responsive: true, maintainAspectRatio: false, animation: false };

  function label(iso) {
    return data.over_time.bucket === "hour" ? iso.slice(11, 16) : iso.slice(5, 10);
  }
  function bar(id, block, horizontal) {
    var canvas = document.getElementById(id);
    if (!canvas) return;
    new window.Chart(canvas, {
      type: "bar",
      data: { labels: block.labels, datasets: [{ label: "count", data: block.values,
        backgroundColor: block.labels.map(function (_, i) { return PALETTE[i % PALETTE.length]; }) }] },
      options: Object.assign({}, base, { indexAxis: horizontal ? "y" : "x",
        plugins: { legend: { display: false } } })
    });
  }

  var ot = document.getElementById("chart-over-time");
  if (ot) {
    var datasets = Object.keys(data.over_time.series).map(function (decision) {
      return { label: decision, data: data.over_time.series[decision],
        backgroundColor: COLORS[decision] || "#4b5563" };
    });
    new window.Chart(ot, {
      type: "bar",
      data: { labels: data.over_time.labels.map(label), datasets: datasets },
      options: Object.assign({}, base, { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } } })
    });
  }
  bar("chart-entity-types", data.entity_types, false);
  bar("chart-approval-wait", data.approval_wait, false);
  bar("chart-top-agents", data.top_agents, true);
  bar("chart-top-targets", data.top_targets, true);
})();
