// The status page: polls /api/status every second and draws the recent
// batches (input rate, processing time, scheduling delay) as SVG charts,
// the stage graph with time and keys per stage, the sources and the recent
// dead letters. Plain DOM and SVG, nothing fetched from elsewhere.
(function () {
  "use strict";
  var SVG = "http://www.w3.org/2000/svg";
  // cjson writes an empty array as {}: lists are read through this.
  function list(x) { return Array.isArray(x) ? x : []; }
  function el(name, attrs, parent, ns) {
    var e = ns ? document.createElementNS(SVG, name) : document.createElement(name);
    for (var k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(e);
    return e;
  }
  function text(id, s) { document.getElementById(id).textContent = s; }
  function fmt(v, digits) {
    if (v === undefined || v === null) return "–";
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(2) + " M";
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + " k";
    return Number(v).toFixed(digits === undefined ? 0 : digits);
  }

  // One line chart of values (one per batch) in the svg of that id.
  function chart(id, values, unit) {
    var svg = document.getElementById(id);
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var W = 380, H = 150, L = 44, R = 8, T = 10, B = 20;
    svg.setAttribute("viewBox", "0 0 " + W + " " + H);
    var max = 0;
    values.forEach(function (v) { if (v > max) max = v; });
    if (max <= 0) max = 1;
    var n = values.length;
    function x(i) { return L + (n <= 1 ? 0 : i * (W - L - R) / (n - 1)); }
    function y(v) { return T + (H - T - B) * (1 - v / max); }
    el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, "class": "axis" }, svg, true);
    el("line", { x1: L, y1: T, x2: L, y2: H - B, "class": "axis" }, svg, true);
    el("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, svg, true).textContent = fmt(max, max < 10 ? 1 : 0);
    el("text", { x: L - 4, y: H - B, "text-anchor": "end" }, svg, true).textContent = "0";
    el("text", { x: W - R, y: H - 4, "text-anchor": "end" }, svg, true).textContent =
      n + " batches" + (unit ? ", " + unit : "");
    var pts = values.map(function (v, i) { return x(i).toFixed(1) + "," + y(v).toFixed(1); });
    if (n > 0) {
      el("polygon", { points: x(0) + "," + (H - B) + " " + pts.join(" ") + " " + x(n - 1) + "," + (H - B),
                      "class": "area" }, svg, true);
    }
    var line = el("polyline", { points: pts.join(" "), "class": "line" }, svg, true);
    line.setAttribute("data-points", String(n));
    line.setAttribute("data-last", n ? String(values[n - 1]) : "");
    if (n > 0) el("circle", { cx: x(n - 1), cy: y(values[n - 1]), r: 2.5 }, svg, true);
  }

  // The stage graph: columns by depth from the sources, an arrow per input.
  function graph(stages) {
    var svg = document.getElementById("stage-graph");
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var defs = el("defs", {}, svg, true);
    var m = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6,
                           orient: "auto" }, defs, true);
    el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#999" }, m, true);
    var depth = {}, rows = {}, pos = {}, BW = 190, BH = 48, GX = 50, GY = 14;
    stages.forEach(function (s) {
      var d = 0;
      list(s.inputs).forEach(function (i) { if (depth[i] !== undefined && depth[i] + 1 > d) d = depth[i] + 1; });
      depth[s.name] = d;
      rows[d] = (rows[d] || 0) + 1;
      pos[s.name] = { x: 8 + d * (BW + GX), y: 8 + (rows[d] - 1) * (BH + GY) };
    });
    var maxRows = 1, maxDepth = 0;
    for (var d in rows) { if (rows[d] > maxRows) maxRows = rows[d]; if (+d > maxDepth) maxDepth = +d; }
    svg.setAttribute("width", 16 + (maxDepth + 1) * (BW + GX) - GX);
    svg.setAttribute("height", 16 + maxRows * (BH + GY) - GY);
    stages.forEach(function (s) {
      var p = pos[s.name];
      list(s.inputs).forEach(function (i) {
        var q = pos[i];
        if (!q) return;
        var x1 = q.x + BW, y1 = q.y + BH / 2, x2 = p.x, y2 = p.y + BH / 2;
        el("path", { d: "M" + x1 + "," + y1 + " C" + (x1 + GX / 2) + "," + y1 + " " + (x2 - GX / 2) + "," + y2 + " " +
                        x2 + "," + y2 }, svg, true);
      });
    });
    stages.forEach(function (s) {
      var p = pos[s.name];
      var g = el("g", { "class": "stage", "data-stage": s.name }, svg, true);
      el("rect", { x: p.x, y: p.y, width: BW, height: BH, rx: 4,
                   "class": s.state_keys !== undefined ? "stateful" : "" }, g, true);
      el("text", { x: p.x + 6, y: p.y + 15 }, g, true).textContent = s.name;
      el("text", { x: p.x + 6, y: p.y + 29, "class": "detail" }, g, true).textContent =
        s.op + (s.fused ? " (fused)" : "");
      var parts = [];
      if (s.last_ms !== undefined) parts.push(fmt(s.last_ms, 2) + " ms");
      if (s.state_keys !== undefined) parts.push(s.state_keys + " keys");
      el("text", { x: p.x + 6, y: p.y + 42, "class": "detail" }, g, true).textContent = parts.join(" · ");
    });
  }

  function rows(id, items, cells) {
    var body = document.querySelector("#" + id + " tbody");
    while (body.firstChild) body.removeChild(body.firstChild);
    items.forEach(function (it) {
      var tr = el("tr", {}, body);
      cells(it).forEach(function (c) {
        var td = el("td", c.cls ? { "class": c.cls } : {}, tr);
        td.textContent = c.v === undefined || c.v === null ? "" : String(c.v);
      });
    });
  }

  function render(st) {
    var job = st.job, totals = st.totals, batches = list(st.batches);
    text("job-name", job.name);
    text("job-line", "batch " + job.batch_ms + " ms · " + job.script + " · up " + fmt(job.uptime_s) + " s · " +
      job.version);
    text("total-batches", totals.batches);
    text("total-records", totals.records);
    text("total-dead", totals.dead_letters);
    text("total-reloads", totals.reloads);
    var sec = job.batch_ms / 1000, recs = 0, proc = 0;
    batches.forEach(function (b) { recs += b.records; proc += b.processing_ms; });
    text("avg-rate", batches.length ? fmt(recs / (batches.length * sec)) + " /s" : "–");
    text("avg-processing", batches.length ? fmt(proc / batches.length, 2) + " ms" : "–");
    var last = batches[batches.length - 1];
    text("state-keys", last ? last.state_keys : "–");
    text("checkpoint-age", st.checkpoint && st.checkpoint.age_s !== undefined ? st.checkpoint.age_s + " s ago" :
      (st.checkpoint ? "none yet" : "off"));
    chart("chart-rate", batches.map(function (b) { return b.records / sec; }), "records/s");
    chart("chart-processing", batches.map(function (b) { return b.processing_ms; }), "ms");
    chart("chart-delay", batches.map(function (b) { return b.scheduling_delay_ms; }), "ms");
    var stages = list(st.stages);
    graph(stages);
    rows("stage-table", stages, function (s) {
      return [{ v: s.name }, { v: s.op + (s.fused ? " (fused)" : "") }, { v: list(s.inputs).join(", ") },
              { v: s.last_ms === undefined ? "" : fmt(s.last_ms, 3), cls: "num" },
              { v: s.total_ms === undefined ? "" : fmt(s.total_ms / 1000, 3), cls: "num" },
              { v: s.state_keys, cls: "num" }];
    });
    rows("source-table", list(st.sources), function (s) {
      return [{ v: s.name }, { v: s.op }, { v: s.records_total, cls: "num" },
              { v: s.position ? JSON.stringify(s.position) : "" }, { v: lag(s.partitions), cls: "lag" }];
    });
    rows("dead-table", list(st.dead_letters && st.dead_letters.recent), function (d) {
      return [{ v: d.seq, cls: "num" }, { v: d.source }, { v: d.offset, cls: "num" }, { v: d.reason },
              { v: d.record + (d.cut ? " …" : ""), cls: "record" }];
    });
    document.body.setAttribute("data-batches", String(totals.batches));
    document.body.setAttribute("data-rendered", String((+document.body.getAttribute("data-rendered") || 0) + 1));
  }

  // A Kafka source's lag: the total, then each partition's ("?": not known yet).
  function lag(parts) {
    parts = list(parts);
    if (!parts.length) return "";
    var total = 0;
    var each = parts.map(function (p) {
      if (p.lag !== undefined) total += p.lag;
      return p.topic + "[" + p.partition + "]: " + (p.lag === undefined ? "?" : p.lag);
    });
    return total + " (" + each.join(", ") + ")";
  }

  function poll() {
    fetch("/api/status", { cache: "no-store" })
      .then(function (r) { return r.json(); })
      .then(function (st) { render(st); text("footer", "updated " + new Date().toLocaleTimeString() +
                                             " from /api/status · /metrics"); })
      .catch(function (e) { text("footer", "cannot reach the job: " + e); })
      .then(function () { setTimeout(poll, 1000); });
  }
  poll();
})();
