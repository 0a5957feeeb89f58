// Draws each calls-over-time chart (the overview's, the log search's) from the page's json_script
// data with the vendored Chart.js: canvas[data-calls-chart] names the id of its data, a list of
// {label, calls, errors} bars.
(function () {
  "use strict";
  if (typeof Chart === "undefined") return;
  document.querySelectorAll("canvas[data-calls-chart]").forEach(function (canvas) {
    var source = document.getElementById(canvas.getAttribute("data-calls-chart"));
    if (!source) return;
    var bars = JSON.parse(source.textContent);
    new Chart(canvas, {
      type: "bar",
      data: {
        labels: bars.map(function (bar) { return bar.label; }),
        datasets: [
          { label: "Calls", data: bars.map(function (bar) { return bar.calls - bar.errors; }),
            backgroundColor: "rgba(31, 95, 191, 0.55)", stack: "calls" },
          { label: "Failed", data: bars.map(function (bar) { return bar.errors; }),
            backgroundColor: "rgba(179, 38, 30, 0.6)", stack: "calls" }
        ]
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        animation: false,
        scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } }
      }
    });
  });
})();
