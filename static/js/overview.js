// Draws the overview's calls-per-hour chart from the page's json_script data with the vendored Chart.js.
(function () {
  "use strict";
  var source = document.getElementById("overview-data");
  var canvas = document.getElementById("chart-calls");
  if (!source || !canvas || typeof Chart === "undefined") return;
  var hours = JSON.parse(source.textContent);
  new Chart(canvas, {
    type: "bar",
    data: {
      labels: hours.map(function (hour) { return hour.hour; }),
      datasets: [
        { label: "Calls", data: hours.map(function (hour) { return hour.calls - hour.errors; }),
          backgroundColor: "rgba(31, 95, 191, 0.55)", stack: "calls" },
        { label: "Failed", data: hours.map(function (hour) { return hour.errors; }),
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
})();
