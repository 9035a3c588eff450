// The totals and small inline charts from /v1/stats: HTML and CSS bars, no chart library (the page's first
// paint never waits for one, and nothing is downloaded but this file). Widths and heights
// are set through the CSSOM (element.style), which the page's Content-Security-Policy allows.
"use strict";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

const pct = (n, of) => `${of ? (100 * n) / of : 0}%`;

// Horizontal bars: rows of {label, parts: [{n, cls, name}]}, longest first.
function bars(container, title, rows, empty) {
  const most = Math.max(1, ...rows.map(r => r.parts.reduce((s, p) => s + p.n, 0)));
  const list = el("ol", "bars");
  for (const row of rows) {
    const total = row.parts.reduce((s, p) => s + p.n, 0);
    const item = el("li");
    item.title = `${row.label}: ${row.parts.map(p => `${p.n} ${p.name}`).join(", ")}`;
    const bar = el("span", "bar");
    for (const part of row.parts) {
      const seg = el("span", `seg ${part.cls}`);
      seg.style.width = pct(part.n, most);
      bar.append(seg);
    }
    item.append(el("span", "label", row.label), bar, el("span", "count", String(total)));
    list.append(item);
  }
  container.replaceChildren(el("h3", "", title), rows.length ? list : el("p", "empty", empty));
}

// Every UTC day from the first to the last of `days` (at most the last `keep`), with zeros
// for the days without decisions, so the columns keep time's spacing.
function calendar(days, keep) {
  if (!days.length) return [];
  const known = new Map(days.map(d => [d.day, d]));
  const last = Date.parse(`${days[days.length - 1].day}T00:00:00Z`);
  const first = Math.max(Date.parse(`${days[0].day}T00:00:00Z`), last - (keep - 1) * 86400000);
  const out = [];
  for (let t = first; t <= last; t += 86400000) {
    const day = new Date(t).toISOString().slice(0, 10);
    out.push(known.get(day) || { day, total: 0, approved: 0 });
  }
  return out;
}

// Columns per day, approved below rejected, over the last 30 days that have decisions.
function columns(container, title, days, keep = 30) {
  const shown = calendar(days, keep);
  const most = Math.max(1, ...shown.map(d => d.total));
  const cols = el("div", "cols");
  for (const d of shown) {
    const col = el("span", "col");
    col.title = `${d.day}: ${d.approved} approved, ${d.total - d.approved} rejected`;
    const rejected = el("span", "seg rejected");
    rejected.style.height = pct(d.total - d.approved, most);
    const approved = el("span", "seg approved");
    approved.style.height = pct(d.approved, most);
    col.append(rejected, approved);
    cols.append(col);
  }
  const axis = el("div", "axis");
  if (shown.length) axis.append(el("span", "", shown[0].day), el("span", "", shown[shown.length - 1].day));
  container.replaceChildren(el("h3", "", title), shown.length ? cols : el("p", "empty", "no decisions"), axis);
}

export function drawCharts(stats) {
  columns(document.getElementById("chart-days"), "approved and rejected per day", stats.days);
  bars(
    document.getElementById("chart-actions"),
    "approved and rejected per action",
    stats.actions.map(a => ({
      label: a.action,
      parts: [
        { n: a.approved, cls: "approved", name: "approved" },
        { n: a.total - a.approved, cls: "rejected", name: "rejected" },
      ],
    })),
    "no decisions",
  );
  bars(
    document.getElementById("chart-voters"),
    "vetoes by voter",
    stats.vetoes.map(v => ({ label: v.voter, parts: [{ n: v.vetoes, cls: "rejected", name: "vetoes" }] })),
    "no vetoes",
  );
}

// The totals line: decisions, approved, rejected, approval rate, vetoes.
export function drawTotals(stats) {
  const rate = stats.total ? ((100 * stats.approved) / stats.total).toFixed(1) : "–";
  const item = (label, value, cls) => {
    const span = el("span", `stat ${cls || ""}`);
    span.append(el("strong", "", value), document.createTextNode(` ${label}`));
    return span;
  };
  document.getElementById("stats").replaceChildren(
    item("decisions", String(stats.total)),
    item("approved", String(stats.approved), "approved"),
    item("rejected", String(stats.total - stats.approved), "rejected"),
    item("approval rate", `${rate}%`),
    item("vetoes", String(stats.vetoes.reduce((n, v) => n + v.vetoes, 0)), "rejected"),
  );
}
