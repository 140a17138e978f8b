// llm2llm report: draws the page from the JSON in #report-data, with no library and no request.
// Text from the run (seed texts, teacher replies, labels) is only ever set as text nodes, never parsed as HTML.
"use strict";
(function () {
  const DATA = JSON.parse(document.getElementById("report-data").textContent);
  const app = document.getElementById("app");
  const NS = "http://www.w3.org/2000/svg"; // the SVG namespace name, not an address anything is fetched from
  const COLORS = { seed: "#4c78a8", oof: "#f58518", test: "#54a24b" };
  const NAMES = { seed: "seed (train) accuracy", oof: "out-of-fold accuracy", test: "test accuracy" };
  const SHORT = { seed: "seed (train)", oof: "out-of-fold", test: "test" };

  // ── small DOM helpers ─────────────────────────────────────────────────────────────────────────
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) if (value !== null && value !== undefined) node.setAttribute(key, value);
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue; // 0 is a tick label
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  const pct = (v) => (v === null || v === undefined ? "—" : (100 * v).toFixed(1) + "%");
  function table(headers, rows, attrs) {
    return el("div", { class: "table-wrap" }, el("table", attrs || {},
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { text: h })))),
      el("tbody", {}, rows.map((cells) => cells instanceof Node ? cells : el("tr", {}, cells.map((c) => c instanceof Node ? c : el("td", { text: c })))))));
  }
  function niceTicks(low, high, count) {
    const span = high - low || 1;
    const raw = span / count, power = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * power).find((s) => span / s <= count) || power * 10;
    const ticks = [];
    for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(+t.toFixed(10));
    return ticks;
  }

  // ── a line chart: x a number (iteration, step), y a number; gaps where a value is missing ─────────
  function lineChart(opts) {
    const W = 560, H = 330, L = 54, R = 16, T = 30 + 16 * Math.ceil(opts.series.length / 3), B = 44;
    const points = opts.series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
    const xs = opts.xs.length ? opts.xs : [0];
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x0 === x1) { x0 -= 0.5; x1 += 0.5; }
    if (opts.integerX) { const pad = 0.15 * (x1 - x0); x0 -= pad; x1 += pad; } // end points off the axes
    let y0 = points.length ? Math.min(...points.map((p) => p[1])) : 0, y1 = points.length ? Math.max(...points.map((p) => p[1])) : 1;
    if (opts.percent) { y0 = Math.max(0, Math.floor(y0 * 10 - 0.5) / 10); y1 = Math.min(1, Math.ceil(y1 * 10 + 0.5) / 10); }
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const X = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R), Y = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": opts.title, id: opts.id });
    chart.append(svg("text", { x: L, y: 16, "font-weight": "600" }, opts.title));
    for (const t of niceTicks(y0, y1, 5)) {
      chart.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: Y(t), y2: Y(t) }));
      chart.append(svg("text", { class: "tick", x: L - 6, y: Y(t) + 4, "text-anchor": "end" }, opts.percent ? Math.round(100 * t) + "%" : +t.toFixed(3)));
    }
    const xTicks = opts.integerX && x1 - x0 <= 24 ? [...new Set(opts.xs)] : niceTicks(Math.min(...xs), Math.max(...xs), 6);
    for (const t of xTicks) chart.append(svg("text", { class: "tick", x: X(t), y: H - B + 16, "text-anchor": "middle" }, t));
    chart.append(svg("line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
    chart.append(svg("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
    chart.append(svg("text", { class: "tick", x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle" }, opts.xLabel));
    if (opts.best !== null && opts.best !== undefined) {
      chart.append(svg("line", { class: "best-line", x1: X(opts.best), x2: X(opts.best), y1: T, y2: H - B }));
      chart.append(svg("text", { class: "tick", x: X(opts.best) + 4, y: T + 10 }, "best"));
    }
    opts.series.forEach((s, k) => {
      let d = "", pen = "M";
      for (const [x, y] of s.points) {
        if (y === null || y === undefined) { pen = "M"; continue; }
        d += `${pen}${X(x).toFixed(1)},${Y(y).toFixed(1)} `; pen = "L";
      }
      const group = svg("g", { class: "series", "data-series": s.key });
      if (d) group.append(svg("path", { class: "line", d, fill: "none", stroke: s.color, "stroke-width": 2 }));
      if (s.markers !== false) {
        for (const [x, y] of s.points) {
          if (y === null || y === undefined) continue;
          const label = `${s.name}, ${opts.xLabel} ${x}: ${opts.percent ? pct(y) : y}`;
          const shape = s.marker === "square" ? svg("rect", { x: X(x) - 4, y: Y(y) - 4, width: 8, height: 8, fill: s.color })
            : s.marker === "triangle" ? svg("path", { d: `M${X(x)},${Y(y) - 5} l5,9 h-10 z`, fill: s.color })
            : svg("circle", { cx: X(x), cy: Y(y), r: 4, fill: s.color });
          shape.setAttribute("class", "point");
          shape.append(svg("title", {}, label));
          group.append(shape);
        }
      }
      chart.append(group);
      // The legend: rows of three above the plot, clear of the lines.
      const lx = L + (k % 3) * 165, ly = 34 + 16 * Math.floor(k / 3);
      chart.append(svg("line", { x1: lx, x2: lx + 18, y1: ly, y2: ly, stroke: s.color, "stroke-width": 3 }));
      chart.append(svg("text", { x: lx + 24, y: ly + 4 }, s.name));
    });
    return chart;
  }

  // ── a run ────────────────────────────────────────────────────────────────────────────────────
  function runPage() {
    app.replaceChildren(el("h1", { text: DATA.title }), el("div", { class: "sub", text: DATA.subtitle }),
      el("div", { class: "status", text: DATA.status }), DATA.best ? el("div", { class: "best", text: DATA.best }) : null);

    app.append(el("h2", { text: "Accuracy per iteration" }));
    const iterations = DATA.accuracy.map((a) => a.iteration);
    const series = ["seed", "oof", "test"].filter((k) => DATA.accuracy.some((a) => a[k] !== null && a[k] !== undefined))
      .map((k) => ({ key: k, name: NAMES[k], color: COLORS[k], marker: { seed: "circle", oof: "triangle", test: "square" }[k],
        points: DATA.accuracy.map((a) => [a.iteration, a[k]]) }));
    const charts = el("div", { class: "charts" }, el("div", { class: "chart" }, lineChart({ id: "accuracy-chart", title: "Accuracy by LLM2LLM iteration",
      series, xs: iterations, xLabel: "iteration", percent: true, integerX: true, best: DATA.best_iteration })));
    const losses = Object.entries(DATA.loss || {});
    if (losses.length) {
      const palette = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d", "#bab0ac"];
      charts.append(el("div", { class: "chart" }, lineChart({ id: "loss-chart", title: "Training loss per step", xLabel: "step",
        xs: losses.flatMap(([, rows]) => rows.map((r) => r[0])),
        series: losses.map(([i, rows], k) => ({ key: "iter" + i, name: "iteration " + i, color: palette[k % palette.length],
          markers: false, points: rows })) })));
    }
    app.append(charts, el("p", { class: "note", text: "Seed accuracy is measured on the seeds the student trained on; " +
      "out-of-fold accuracy on seeds held out of training (select.by=out_of_fold), an estimate that needs no test set; " +
      "test accuracy on the run's test set. The best iteration is chosen by out-of-fold accuracy, never by test accuracy." }));

    app.append(el("h2", { text: "Iterations" }));
    const best = DATA.best_iteration;
    app.append(table(DATA.table.headers, DATA.table.rows.map((cells, k) =>
      el("tr", { class: DATA.accuracy[k] && DATA.accuracy[k].iteration === best ? "best-row" : null },
        cells.map((c, j) => el("td", { class: DATA.table.headers[j] === "rejected by reason" || DATA.table.headers[j] === "stage seconds" ? "wrap" : null, text: c })))),
      { id: "iterations-table" }));

    if (DATA.per_label && DATA.per_label.labels.length) perLabel(DATA.per_label);
    lineageBrowser(DATA.lineage);
  }

  function perLabel(data) {
    app.append(el("h2", { text: "Accuracy per label" }));
    const kinds = Object.keys(data.accuracy);
    let kind = kinds.includes("test") ? "test" : kinds[0];
    const buttons = el("div", { class: "controls" }, el("span", { text: "Measured on:" }));
    const holder = el("div", {});
    function draw() {
      for (const b of buttons.querySelectorAll("button")) b.classList.toggle("on", b.dataset.kind === kind);
      const counts = (data.counts[kind === "oof" ? "seed" : kind]) || {};
      const rows = data.labels.map((label) => el("tr", {}, el("td", { text: label }), el("td", { text: counts[label] ?? "—" }),
        (data.accuracy[kind][label] || []).map((v) => el("td", {
          text: pct(v), style: v === null || v === undefined ? null : `background: hsl(${Math.round(120 * v)}, 60%, 90%)` }))));
      holder.replaceChildren(table(["label", kind === "test" ? "test rows" : "seeds", ...data.iterations.map((i) => "iter " + i)], rows, { id: "per-label-table" }));
    }
    for (const k of kinds) buttons.append(el("button", { "data-kind": k, text: SHORT[k], onclick: () => { kind = k; draw(); } }));
    app.append(buttons, holder);
    draw();
  }

  // ── the lineage browser ──────────────────────────────────────────────────────────────────────
  function lineageBrowser(parents) {
    app.append(el("h2", { text: "Lineage: what the teacher wrote, and what became of it" }));
    if (!parents.length) {
      app.append(el("p", { class: "empty", text: "No seed example was given to the teacher in this run." }));
      return;
    }
    app.append(el("p", { class: "note", text: "Each seed example the teacher was given, with what the student answered, " +
      "and every reply written from it: accepted into the training data, or rejected with the reason (a verifier's " +
      "answer where it disagreed)." }));
    const labels = [...new Set(parents.map((p) => p.label))].sort();
    const iterations = [...new Set(parents.map((p) => p.iteration))].sort((a, b) => a - b);
    const outcomes = {};
    for (const p of parents) for (const c of p.children) outcomes[c.outcome] = (outcomes[c.outcome] || 0) + 1;
    const options = (values, all, show) => [el("option", { value: "", text: all }), ...values.map((v) => el("option", { value: String(v), text: show ? show(v) : String(v) }))];
    const labelSelect = el("select", { id: "filter-label" }, options(labels, "all labels"));
    const iterationSelect = el("select", { id: "filter-iteration" }, options(iterations, "all iterations", (i) => "iteration " + i));
    const rejectedCount = Object.entries(outcomes).filter(([k]) => k !== "accepted").reduce((n, [, v]) => n + v, 0);
    const outcomeSelect = el("select", { id: "filter-outcome" }, el("option", { value: "", text: "all outcomes" }),
      el("option", { value: "accepted", text: `accepted (${outcomes.accepted || 0})` }),
      el("option", { value: "rejected", text: `rejected, any reason (${rejectedCount})` }),
      Object.keys(outcomes).filter((k) => k !== "accepted").sort().map((k) => el("option", { value: k, text: `rejected: ${k} (${outcomes[k]})` })));
    const search = el("input", { type: "search", id: "search", placeholder: "search texts, answers, replies…" });
    const count = el("span", { class: "count", id: "lineage-count" });
    const list = el("div", { id: "lineage" });
    const more = el("button", { id: "more", text: "show more" });
    app.append(el("div", { class: "controls" }, el("label", {}, "label", labelSelect), el("label", {}, "iteration", iterationSelect),
      el("label", {}, "outcome", outcomeSelect), search, count), list, more);

    const PAGE = 60;
    let shown = PAGE, matches = [];
    const has = (text, needle) => !needle || (text || "").toLowerCase().includes(needle);
    function highlighted(text, needle) {
      const span = el("span", { class: "text" });
      if (!needle) { span.textContent = text; return span; }
      const lower = text.toLowerCase();
      let at = 0;
      for (let hit = lower.indexOf(needle); hit >= 0; hit = lower.indexOf(needle, at)) {
        span.append(text.slice(at, hit), el("mark", { text: text.slice(hit, hit + needle.length) }));
        at = hit + needle.length;
      }
      span.append(text.slice(at));
      return span;
    }
    function filter() {
      const label = labelSelect.value, iteration = iterationSelect.value, outcome = outcomeSelect.value;
      const needle = search.value.trim().toLowerCase();
      matches = [];
      for (const p of parents) {
        if ((label && p.label !== label) || (iteration && String(p.iteration) !== iteration)) continue;
        const byOutcome = p.children.filter((c) => !outcome || c.outcome === outcome || (outcome === "rejected" && c.outcome !== "accepted"));
        if (outcome && !byOutcome.length) continue;
        const parentHit = has(p.text, needle) || has(p.answer, needle) || (p.choices || []).some((c) => has(c, needle));
        const children = parentHit ? byOutcome : byOutcome.filter((c) => has(c.text, needle) || has(c.verifier, needle) ||
          has(c.detail, needle) || has(c.label, needle) || (c.choices || []).some((x) => has(x, needle)));
        if (!parentHit && !children.length) continue;
        matches.push([p, children]);
      }
      shown = PAGE;
      draw(needle);
    }
    function draw(needle) {
      const replies = matches.reduce((n, [, children]) => n + children.length, 0);
      count.textContent = `${matches.length} of ${parents.length} seed examples · ${replies} replies`;
      list.replaceChildren(...matches.slice(0, shown).map(([p, children]) => parentCard(p, children, needle)));
      if (!matches.length) list.append(el("p", { class: "empty", text: "Nothing matches these filters." }));
      more.hidden = matches.length <= shown;
      more.textContent = `show more (${matches.length - shown} left)`;
    }
    function parentCard(p, children, needle) {
      const wrong = p.answer !== null && p.answer !== undefined && p.answer !== p.label;
      const head = el("div", { class: "parent-head" }, el("span", { class: "tag", text: "iteration " + p.iteration }),
        el("span", { class: "tag label", text: "label: " + p.label }),
        p.why ? el("span", { class: "tag", text: "chosen: " + p.why.replace("_", " ") }) : null,
        p.answer !== undefined && p.answer !== null ? el("span", { class: "tag" + (wrong ? " wrong" : ""), text: "student answered: " + p.answer })
          : (p.why === "wrong" ? el("span", { class: "tag wrong", text: "student gave no valid answer" }) : null));
      const card = el("div", { class: "parent", "data-iteration": p.iteration, "data-label": p.label }, head, highlighted(p.text, needle));
      if (p.choices) card.append(el("ol", { class: "choices", type: "A" }, p.choices.map((c) => el("li", {}, highlighted(c, needle)))));
      const items = children.map((c) => {
        const accepted = c.outcome === "accepted";
        const item = el("li", { class: "child " + (accepted ? "accepted" : "rejected"), "data-outcome": c.outcome },
          el("span", { class: "outcome", text: accepted ? "✓ accepted" : "✗ " + c.outcome }));
        if (c.text) {
          const text = highlighted(c.text, needle);
          if (c.raw) text.classList.add("raw");
          item.append(text);
        } else item.append(el("span", { class: "empty", text: "(no text)" }));
        if (c.choices) item.append(el("ol", { class: "choices", type: "A" }, c.choices.map((x) => el("li", { text: x }))));
        const meta = [];
        if (c.label !== null && c.label !== undefined) meta.push("label: " + c.label);
        if (c.verifier !== null && c.verifier !== undefined) meta.push((accepted ? "verifier agreed: " : "verifier answered: ") + c.verifier);
        if (c.detail && c.outcome !== "label_mismatch") meta.push(c.detail); // a mismatch's detail repeats the verifier's answer
        if (c.raw) meta.push("the teacher's reply as written");
        if (meta.length) item.append(el("div", { class: "meta" }, highlighted(meta.join(" · "), needle)));
        return item;
      });
      card.append(items.length ? el("ul", { class: "children" }, items) : el("div", { class: "empty", text: "no reply" }));
      return card;
    }
    for (const control of [labelSelect, iterationSelect, outcomeSelect]) control.addEventListener("change", filter);
    search.addEventListener("input", filter);
    more.addEventListener("click", () => { shown += PAGE; draw(search.value.trim().toLowerCase()); });
    filter();
  }

  // ── a comparison ─────────────────────────────────────────────────────────────────────────────
  function comparePage() {
    app.replaceChildren(el("h1", { text: DATA.title + ": methods compared" }), el("div", { class: "sub", text: DATA.subtitle }));
    app.append(el("h2", { text: "Test accuracy by method" }), barChart(DATA.bars));
    app.append(el("h2", { text: "Table" }), table(DATA.table.headers, DATA.table.rows, { id: "compare-table" }));
    app.append(el("h2", { text: "Runs" }), table(["method", "repeat", "seed", "test accuracy", "added examples", "report"],
      DATA.runs.map((r) => el("tr", {}, el("td", { text: r.method }), el("td", { text: r.repeat }), el("td", { text: r.seed ?? "—" }),
        el("td", { text: pct(r.test_accuracy) }), el("td", { text: r.augmented ?? "—" }),
        el("td", {}, r.report ? el("a", { href: r.report, text: "report.html" }) : "—"))), { id: "runs-table" }));
  }

  function barChart(bars) {
    const W = 640, row = 34, L = 150, R = 24, T = 10, B = 40, H = T + B + row * Math.max(bars.length, 1);
    const values = bars.flatMap((b) => [b.mean + (b.std || 0), ...b.runs]);
    const lo = 0; // bars start at zero, as in compare.png: a cut axis would make small differences look large
    const hi = Math.min(100, Math.ceil((Math.max(...values, 0) + 2) / 10) * 10);
    const X = (v) => L + ((v - lo) / (hi - lo || 1)) * (W - L - R);
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, id: "compare-chart", role: "img", "aria-label": "test accuracy by method" });
    for (const t of niceTicks(lo, hi, 6)) {
      chart.append(svg("line", { class: "grid", x1: X(t), x2: X(t), y1: T, y2: H - B }));
      chart.append(svg("text", { class: "tick", x: X(t), y: H - B + 16, "text-anchor": "middle" }, t + "%"));
    }
    chart.append(svg("text", { class: "tick", x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle" }, "test accuracy — bar: mean ± std, dots: repeats"));
    bars.forEach((b, k) => {
      const y = T + row * k + 6, h = row - 12;
      const bar = svg("rect", { class: "bar", x: X(lo), y, width: Math.max(0, X(b.mean) - X(lo)), height: h,
        fill: b.short ? "#dddddd" : "#8fb3d9", stroke: b.short ? "#888" : null });
      bar.append(svg("title", {}, `${b.method}: ${b.mean.toFixed(1)}%` + (b.std !== null ? ` ± ${b.std.toFixed(1)}` : "") + (b.short ? " (short of examples)" : "")));
      chart.append(bar, svg("text", { x: L - 8, y: y + h / 2 + 4, "text-anchor": "end" }, b.method + (b.short ? " (short)" : "")));
      if (b.std) chart.append(svg("line", { x1: X(b.mean - b.std), x2: X(b.mean + b.std), y1: y + h / 2, y2: y + h / 2, stroke: "#333" }));
      for (const v of b.runs) chart.append(svg("circle", { cx: X(v), cy: y + h / 2, r: 3, fill: "#222" }));
    });
    return chart;
  }

  if (DATA.kind === "compare") comparePage(); else runPage();
  document.body.dataset.ready = "true"; // for tests and screenshots: the page has drawn itself
})();
