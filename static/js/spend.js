// Draws the spend charts from the page's json_script data with the vendored Chart.js.
(function () {
  "use strict";
  var source = document.getElementById("spend-data");
  if (!source || typeof Chart === "undefined") return;
  var data = JSON.parse(source.textContent);
  // The money filter of dashboard/templatetags/nemo.py: to the micro-dollar, trailing zeros
  // dropped, never fewer than cents. Chart ticks (0.005 apart, say) so stay distinct.
  var money = function (value) {
    var text = Math.abs(value).toFixed(6).replace(/0+$/, "");
    var parts = text.split(".");
    var fraction = (parts[1] || "");
    while (fraction.length < 2) fraction += "0";
    var whole = parts[0].replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (value < 0 && Number(text) !== 0 ? "-$" : "$") + whole + "." + fraction;
  };

  // Key names can be long; on a phone the bars need the room more than the whole name does.
  var shortLabel = function (value) {
    var label = this.getLabelForValue(value);
    return label.length > 22 ? label.slice(0, 21) + "…" : label;
  };

  // The day chart: each day's spend stacked by model (day_by_model), one colour a model.
  var COLOURS = ["#1f5fbf", "#1b7f4b", "#a86400", "#7b3fb3", "#b3261e", "#0f7c86", "#8a8f98"];
  var stacked = data.day_by_model;

  document.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
    var group = canvas.getAttribute("data-chart");
    if (group === "day" && stacked && stacked.models.length) {
      new Chart(canvas, {
        type: "bar",
        data: {
          labels: stacked.days,
          datasets: stacked.models.map(function (series, index) {
            return { label: series.model, data: series.costs.map(Number), stack: "spend",
                     backgroundColor: COLOURS[index % COLOURS.length], maxBarThickness: 28 };
          })
        },
        options: {
          responsive: true,
          maintainAspectRatio: false,
          plugins: {
            legend: { position: "bottom", labels: { boxWidth: 12 } },
            tooltip: { callbacks: { label: function (ctx) { return ctx.dataset.label + ": " + money(ctx.parsed.y); } } }
          },
          scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true, ticks: { callback: money } } }
        }
      });
      return;
    }
    var rows = data[group] || [];
    new Chart(canvas, {
      type: group === "day" ? "line" : "bar",
      data: {
        labels: rows.map(function (row) { return row.group; }),
        datasets: [{
          label: "Spend (USD)",
          // Costs arrive as decimal strings (exact money); a chart only needs their size.
          data: rows.map(function (row) { return Number(row.cost); }),
          backgroundColor: "rgba(31, 95, 191, 0.55)",
          borderColor: "#1f5fbf",
          fill: group === "day",
          tension: 0.2,
          maxBarThickness: 28
        }]
      },
      options: {
        responsive: true,
        maintainAspectRatio: false,
        indexAxis: group === "day" ? "x" : "y",
        plugins: {
          legend: { display: false },
          tooltip: { callbacks: { label: function (ctx) { return money(ctx.parsed[group === "day" ? "y" : "x"]); } } }
        },
        scales: group === "day"
          ? { y: { beginAtZero: true, ticks: { callback: money } } }
          : { x: { beginAtZero: true, ticks: { callback: money } }, y: { ticks: { callback: shortLabel } } }
      }
    });
  });
})();
