// The operator dashboard: everything it shows comes from the JSON API of the same server.
"use strict";
const token = new URLSearchParams(location.search).get("access_token");
const MAX_ROWS = 500;
let rows = [];      // decisions shown, newest first
let stats = null;

function api(path, params = {}) {
  const url = new URL(path, location.href);
  for (const [k, v] of Object.entries(params)) if (v !== "" && v != null) url.searchParams.set(k, v);
  if (token) url.searchParams.set("access_token", token);
  return url;
}
async function getJSON(path, params) {
  const response = await fetch(api(path, params));
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}
const filters = () => ({
  action: document.getElementById("filter-action").value,
  approved: document.getElementById("filter-verdict").value,
  voter: document.getElementById("filter-voter").value,
});
function matches(d, f) {
  if (f.action && d.action !== f.action) return false;
  if (f.approved && String(d.approved) !== f.approved) return false;
  if (f.voter && !(d.votes[f.voter] && d.votes[f.voter].passed === false)) return false;
  return true;
}
const vetoes = d => Object.entries(d.votes).filter(([, v]) => v && v.passed === false).map(([k]) => k);
function cell(text, cls) { const td = document.createElement("td"); td.textContent = text; if (cls) td.className = cls; return td; }

function render() {
  const body = document.querySelector("#feed tbody");
  const f = filters();
  body.replaceChildren(...rows.filter(d => matches(d, f)).map(d => {
    const tr = document.createElement("tr");
    tr.dataset.seq = d.seq;
    tr.append(cell(d.seq), cell(d.datetime_utc.slice(0, 19).replace("T", " ")), cell(d.action),
      cell(d.approved ? "approved" : "REJECTED", d.approved ? "approved" : "rejected"),
      cell(vetoes(d).join(", "), "veto"),
      cell(["agent_id", "version"].filter(k => k in d.subject).map(k => `${k}=${d.subject[k]}`).join(" ")),
      cell(d.reason));
    tr.addEventListener("click", () => showDetail(d.seq));
    return tr;
  }));
}

async function load() {
  const page = await getJSON("/v1/decisions", { limit: 200, ...filters() });
  const seen = new Set(page.decisions.map(d => d.seq));
  rows = page.decisions.concat(rows.filter(d => !seen.has(d.seq) && matches(d, filters())))
    .sort((a, b) => b.seq - a.seq).slice(0, MAX_ROWS);
  render();
}

async function showDetail(seq) {
  const { decision: d, signed } = await getJSON(`/v1/decisions/${seq}`);
  const panel = document.getElementById("detail");
  // What the server proved of the stored bytes: never "signed" unless checked (SPEC 4a).
  const words = { verified: ["signed", "approved"], altered: ["ALTERED", "rejected"],
    unsigned: ["not yet signed", ""], unverified: ["NOT VERIFIED", "rejected"] };
  const [word, style] = words[signed && signed.status] || ["not checked", ""];
  const line = document.getElementById("detail-signed");
  const mark = document.createElement("strong");
  mark.textContent = word;
  if (style) mark.className = style;
  line.replaceChildren(mark, document.createTextNode(`: ${signed ? signed.detail : ""}`));
  panel.classList.remove("hidden");
  document.getElementById("detail-title").textContent =
    `#${d.seq} ${d.action} — ${d.approved ? "approved" : "REJECTED"}`;
  document.getElementById("detail-meta").textContent = `${d.datetime_utc} · ${d.id} · ${d.reason}`;
  document.querySelector("#detail-votes tbody").replaceChildren(...Object.entries(d.votes).map(([name, v]) => {
    const tr = document.createElement("tr");
    const passed = v && v.passed;
    tr.append(cell(name), cell(passed === true ? "pass" : passed === false ? "FAIL" : JSON.stringify(v),
      passed === false ? "rejected" : "approved"), cell((v && v.reason) || ""));
    return tr;
  }));
  document.querySelector("#detail-subject tbody").replaceChildren(...Object.entries(d.subject).map(([k, v]) => {
    const tr = document.createElement("tr");
    tr.append(cell(k), cell(typeof v === "string" ? v : JSON.stringify(v)));
    return tr;
  }));
}

function fillSelect(id, values) {
  const select = document.getElementById(id);
  const have = new Set([...select.options].map(o => o.value));
  for (const v of values) if (!have.has(v)) select.add(new Option(v, v));
}

async function refreshStats() {
  stats = await getJSON("/v1/stats");
  fillSelect("filter-action", stats.actions.map(a => a.action));
  fillSelect("filter-voter", stats.vetoes.map(v => v.voter));
  const layout = title => ({ title: { text: title }, barmode: "stack", margin: { t: 40, b: 60, l: 40, r: 10 }, legend: { orientation: "h" } });
  const config = { displayModeBar: false, responsive: true };
  const days = stats.days.map(d => d.day);
  Plotly.react("chart-days", [
    { type: "bar", name: "approved", x: days, y: stats.days.map(d => d.approved), marker: { color: "#1f8a4c" } },
    { type: "bar", name: "rejected", x: days, y: stats.days.map(d => d.total - d.approved), marker: { color: "#c62828" } },
  ], { ...layout("approved vs rejected per day"), xaxis: { type: "category" } }, config);
  const actions = stats.actions.map(a => a.action);
  Plotly.react("chart-actions", [
    { type: "bar", name: "approved", x: actions, y: stats.actions.map(a => a.approved), marker: { color: "#1f8a4c" } },
    { type: "bar", name: "rejected", x: actions, y: stats.actions.map(a => a.total - a.approved), marker: { color: "#c62828" } },
  ], layout("approved vs rejected per action"), config);
  Plotly.react("chart-voters", [
    { type: "bar", name: "vetoes", x: stats.vetoes.map(v => v.voter), y: stats.vetoes.map(v => v.vetoes), marker: { color: "#c62828" } },
  ], layout("vetoes by voter"), config);
}

async function refreshBadge() {
  const badge = document.getElementById("badge");
  try {
    const v = await getJSON("/v1/verify");
    if (v.status === "ok") {
      badge.className = "badge ok";
      badge.textContent = `verified: ${v.records} records, signed through seq ${v.signed_size - 1}`;
    } else if (v.status === "failed") {
      badge.className = "badge failed";
      badge.textContent = `verification FAILED: ${v.failures} findings`;
    } else {
      badge.className = "badge pending";
      badge.textContent = "verification pending";
    }
  } catch (e) { badge.className = "badge pending"; badge.textContent = "verification unknown"; }
}

let statsTimer = null;
function connect() {
  const live = document.getElementById("live");
  // EventSource reconnects by itself and resumes with Last-Event-ID: no gaps, no repeats.
  const source = new EventSource(api("/v1/stream"));
  source.onopen = () => { live.textContent = "live"; };
  source.onerror = () => { live.textContent = "reconnecting…"; };
  source.addEventListener("decision", event => {
    const d = JSON.parse(event.data);
    if (rows.some(r => r.seq === d.seq)) return;
    rows.unshift(d);
    rows.length = Math.min(rows.length, MAX_ROWS);
    render();
    clearTimeout(statsTimer);
    statsTimer = setTimeout(refreshStats, 500);
  });
}

for (const id of ["filter-action", "filter-verdict", "filter-voter"])
  document.getElementById(id).addEventListener("change", load);
load().then(connect);
refreshStats();
refreshBadge();
setInterval(refreshBadge, 10000);
