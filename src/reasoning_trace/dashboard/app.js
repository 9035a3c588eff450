// The operator dashboard: everything it shows comes from the JSON API of the same server.
//
// The feed: the newest page of decisions first (the first useful paint), then the live
// stream resumed exactly after that page (stream.js). New rows wait in an "N new" bar while
// the reader scrolls or points at the feed. Filters (action, verdict, voter, time, subject)
// apply to the feed, the totals and the charts alike. Records are parsed by exact.js, so
// numbers are shown as stored. The badge shows the server's last verification and when it
// ran; the detail panel checks the record's inclusion proof in this browser (proof.js)
// against the checkpoint the badge names.
"use strict";

import { ApiError, AuthError, getJSON, getText, setToken, token } from "./api.js";
import { openVerification, renderBadge } from "./badge.js";
import { drawCharts, drawTotals } from "./charts.js";
import { DetailPanel } from "./detail.js";
import { get, parse, show } from "./exact.js";
import { $, cell, decision, matches, vetoes } from "./records.js";
import { LiveStream } from "./stream.js";

const PAGE = 200; // decisions loaded with the page
const MAX_ROWS = 500; // rows kept in the feed
const KEEP_RECENT = 5000; // streamed decisions kept to refill the feed when filters change

const state = {
  page: 0, // which page load is current
  pageSize: 0, // log_size of the current page: the stream fills in from there
  shown: new Set(), // seqs in the feed
  pending: [], // decisions that arrived while the reader reads, newest first
  pendingDropped: 0, // more that arrived meanwhile than the feed keeps
  queued: [], // decisions to add at the next frame, oldest first
  recent: [], // decisions the stream delivered, oldest first
  hover: false,
  stream: null,
  verify: null, // the last /v1/verify answer
  subject: "", // KEY=VALUE of the subject filter
  subjectKeys: new Set(["agent_id", "prompt_id", "goal_type", "version"]),
  statsTimer: null,
  timers: [],
};

const detail = new DetailPanel({
  verification: () => state.verify,
  onSubject: item => setSubject(item),
  onAuth: e => failed(e),
});

// --- the feed's filters ---------------------------------------------------------------------

function filters() {
  return {
    action: $("filter-action").value,
    approved: $("filter-verdict").value,
    voter: $("filter-voter").value,
    since: $("filter-since").value,
    subject: state.subject ? [state.subject] : [],
  };
}

// --- the feed -------------------------------------------------------------------------------

function subjectChip(key, value) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = "chip subject";
  b.textContent = `${key}=${value}`;
  b.title = `every decision about ${key}=${value}`;
  b.addEventListener("click", e => { e.stopPropagation(); setSubject(`${key}=${value}`); });
  return b;
}

function row(d) {
  const tr = document.createElement("tr");
  tr.dataset.seq = d.seqText;
  tr.tabIndex = 0;
  const subject = cell("", "subject", "subject");
  for (const key of ["agent_id", "version"]) {
    if (d.subject.has(key)) subject.append(subjectChip(key, show(d.subject.get(key))));
  }
  tr.append(
    cell(d.seqText, "c-seq", "seq"),
    cell(d.time.slice(0, 19).replace("T", " "), "c-time", "time"),
    cell(d.action, "action", "action"),
    cell(d.approved ? "approved" : "REJECTED", `c-verdict ${d.approved ? "approved" : "rejected"}`, "verdict"),
    cell(vetoes(d).join(", "), "veto", "vetoed by"),
    subject,
    cell(d.reason, "reason", "reason"),
  );
  tr.addEventListener("click", () => detail.open(d.seqText));
  tr.addEventListener("keydown", e => { if (e.key === "Enter") detail.open(d.seqText); });
  return tr;
}

// Whether the reader is reading: pointing at the feed, or scrolled down in it or past its top.
const reading = () => {
  const box = $("feed-box");
  return state.hover || box.scrollTop > 2 || box.getBoundingClientRect().top < -2;
};

function emptyNote() {
  $("feed-empty").hidden = state.shown.size > 0;
}

// Put decisions (newest first) at the top of the feed, each seq once; trim the oldest.
function prepend(list) {
  const fresh = list.filter(d => !state.shown.has(d.seq));
  if (!fresh.length) return;
  const body = document.querySelector("#feed tbody");
  body.prepend(...fresh.map(row));
  for (const d of fresh) state.shown.add(d.seq);
  while (body.rows.length > MAX_ROWS) {
    state.shown.delete(Number(body.lastElementChild.dataset.seq));
    body.lastElementChild.remove();
  }
  emptyNote();
}

function newBar() {
  const bar = $("new-bar");
  const n = state.pending.length + state.pendingDropped;
  bar.hidden = n === 0;
  bar.textContent = `${n} new — show`;
}

function showPending() {
  const pending = state.pending;
  if (state.pendingDropped) { // more arrived than the feed keeps: it restarts from them
    document.querySelector("#feed tbody").replaceChildren();
    state.shown.clear();
  }
  state.pending = [];
  state.pendingDropped = 0;
  prepend(pending);
  newBar();
}

function flushQueued() {
  const queued = state.queued;
  state.queued = [];
  const newest = queued.reverse();
  if (reading()) {
    state.pending = newest.concat(state.pending);
    if (state.pending.length > MAX_ROWS) { // kept: the newest the feed can show
      state.pendingDropped += state.pending.length - MAX_ROWS;
      state.pending.length = MAX_ROWS;
    }
    newBar();
  } else {
    prepend(newest);
  }
}

function arrived(seq, line) {
  let d;
  try {
    d = decision(parse(line), line, String(seq));
  } catch (e) {
    d = decision(new Map([["action", "(not a record)"], ["reason", line]]), line, String(seq));
  }
  state.recent.push(d);
  if (state.recent.length > KEEP_RECENT) state.recent.splice(0, state.recent.length - KEEP_RECENT);
  for (const key of d.subject.keys()) state.subjectKeys.add(key);
  if (d.seq < state.pageSize || !matches(d, filters())) return;
  if (!state.queued.length) requestAnimationFrame(flushQueued);
  state.queued.push(d);
  statsSoon();
}

function liveState(kind, detail) {
  const live = $("live");
  live.className = `live ${kind}`;
  live.textContent = {
    loading: "loading…",
    "signed-out": "sign-in needed",
    connecting: "connecting…",
    "catching-up": `catching up: ${detail} to go`,
    live: "live",
    reconnecting: `connection lost: reconnecting in ${Math.ceil((detail || 0) / 1000)} s…`,
  }[kind] || kind;
}

// Load the newest page for the filters; the feed is that page plus what streamed since.
async function loadPage() {
  const mine = ++state.page;
  const f = filters();
  const text = await getText("/v1/decisions", { limit: PAGE, ...f });
  const body = parse(text);
  if (mine !== state.page) return Number(show(get(body, "log_size"))); // a later load shows
  const lines = get(body, "decisions") || [];
  const seqs = get(body, "seqs") || [];
  const page = lines.map((m, i) => decision(m, null, seqs[i] ? show(seqs[i]) : ""));
  const size = Number(show(get(body, "log_size")));
  state.pageSize = size;
  const streamed = state.recent.filter(d => d.seq >= size && matches(d, f)).reverse();
  state.shown.clear();
  state.pending = [];
  state.pendingDropped = 0;
  state.queued = [];
  document.querySelector("#feed tbody").replaceChildren();
  prepend([...streamed, ...page]);
  newBar();
  return size;
}

// --- totals and charts ----------------------------------------------------------------------

function fillSelect(id, values) {
  const select = $(id);
  const have = new Set([...select.options].map(o => o.value));
  for (const v of values) if (!have.has(v)) select.add(new Option(v, v));
}

async function refreshStats() {
  const stats = await getJSON("/v1/stats", filters());
  fillSelect("filter-action", stats.actions.map(a => a.action));
  fillSelect("filter-voter", stats.vetoes.map(v => v.voter));
  drawTotals(stats);
  drawCharts(stats);
}

// New decisions change the totals: refresh them, at most every 15 seconds (the server counts
// them from the records themselves, a pass over the log).
function statsSoon() {
  if (state.statsTimer) return;
  state.statsTimer = setTimeout(() => {
    state.statsTimer = null;
    refreshStats().catch(failed);
  }, 15000);
}

// --- the verification badge (badge.js draws it) --------------------------------------------

async function refreshBadge() {
  const before = state.verify && state.verify.checkpoint;
  let v;
  try {
    v = await getJSON("/v1/verify");
  } catch (e) {
    if (e instanceof AuthError) throw e;
    $("badge").className = "badge checking";
    $("badge-word").textContent = "verification unknown";
    $("badge-detail").textContent = `the server did not answer (${e.message || e})`;
    return;
  }
  renderBadge(v, state.verify);
  state.verify = v;
  const after = v.checkpoint;
  const shown = detail.shown;
  if (shown && (before?.size !== after?.size || before?.root !== after?.root)) {
    detail.open(shown.seq, { keepScroll: true }); // the checkpoint changed: check again
  }
}

// --- filters and search ---------------------------------------------------------------------

function setSubject(item) {
  state.subject = item;
  $("subject-filter").hidden = !item;
  $("subject-filter-text").textContent = item;
  reload();
}

function reload() {
  loadPage().catch(failed);
  refreshStats().catch(failed);
}

// Find by id or seq (opens that decision) or by subject value (shows that subject's
// history): KEY=VALUE names the key; a bare value is tried with each subject key seen.
async function search(text) {
  const q = text.trim();
  const message = $("search-message");
  message.textContent = "";
  if (!q) return;
  const idLike = /^[A-Za-z0-9._:-]{1,128}$/.test(q);
  const byId = async () => {
    try {
      await getText(`/v1/decisions/${encodeURIComponent(q)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) return false;
      throw e;
    }
    detail.open(q);
    return true;
  };
  const bySubject = async () => {
    if (q.includes("=")) { setSubject(q); return true; }
    for (const key of state.subjectKeys) {
      const page = parse(await getText("/v1/decisions", { limit: 1, subject: `${key}=${q}` }));
      if ((get(page, "decisions") || []).length) { setSubject(`${key}=${q}`); return true; }
    }
    return false;
  };
  // A seq or a UUID is an id first; other words are more often a subject's value.
  const looksLikeId = /^[0-9]+$/.test(q) || /^[0-9a-f]{8}-[0-9a-f]{4}-/.test(q);
  const order = looksLikeId ? [byId, bySubject] : [bySubject, ...(idLike ? [byId] : [])];
  for (const attempt of order) if (await attempt()) return;
  message.textContent = `No decision has the id or seq ${q}, nor a subject value ${q}.`;
}

// --- start, sign-in, failures ---------------------------------------------------------------

function failed(e) {
  if (e instanceof AuthError) {
    signIn(e.status === 401 && token()
      ? `The token was not accepted (${e.message}). Enter a read token.`
      : e.status === 403 ? `This token may not read here (${e.message}).`
        : "This server needs a read token.");
    return;
  }
  if (e && e.name === "AbortError") return;
  $("search-message").textContent = `Could not reach the server: ${e.message || e}`;
}

function signIn(message) {
  stop();
  $("signin-message").textContent = message;
  $("signin").hidden = false;
  $("signout").hidden = true;
  liveState("signed-out");
  $("signin-token").focus();
}

function stop() {
  if (state.stream) state.stream.stop();
  state.stream = null;
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
}

async function start() {
  stop();
  $("signin").hidden = true;
  $("signout").hidden = !token();
  liveState("loading");
  try {
    const size = await loadPage();
    state.stream = new LiveStream({
      // After the page shown (or before it, if a later load overtook this one: what the
      // page holds already is not shown twice).
      after: Math.min(size, state.pageSize) - 1,
      onDecision: arrived,
      onState: liveState,
      onAuth: failed,
    });
    state.stream.start();
  } catch (e) {
    failed(e);
    return;
  }
  refreshStats().catch(failed);
  refreshBadge().catch(failed);
  state.timers.push(setInterval(() => refreshBadge().catch(failed), 2000));
}

function wire() {
  for (const id of ["filter-action", "filter-verdict", "filter-voter", "filter-since"]) {
    $(id).addEventListener("change", reload);
  }
  $("subject-clear").addEventListener("click", () => setSubject(""));
  $("search").addEventListener("submit", e => {
    e.preventDefault();
    search($("search-input").value).catch(failed);
  });
  const box = $("feed-box");
  box.addEventListener("mouseenter", () => { state.hover = true; });
  box.addEventListener("mouseleave", () => {
    state.hover = false;
    if (!reading()) showPending();
  });
  const back = () => { if (state.pending.length && !reading()) showPending(); };
  box.addEventListener("scroll", back, { passive: true });
  window.addEventListener("scroll", back, { passive: true });
  $("new-bar").addEventListener("click", () => {
    box.scrollTop = 0;
    if (box.getBoundingClientRect().top < 0) box.scrollIntoView();
    showPending();
  });
  $("detail-close").addEventListener("click", () => detail.close());
  $("badge").addEventListener("click", () => openVerification($("verification").hidden));
  $("verification-close").addEventListener("click", () => openVerification(false));
  document.addEventListener("keydown", e => {
    if (e.key === "Escape") { detail.close(); openVerification(false); }
  });
  $("signin").addEventListener("submit", e => {
    e.preventDefault();
    setToken($("signin-token").value.trim());
    $("signin-token").value = "";
    start();
  });
  $("signout").addEventListener("click", () => {
    setToken("");
    signIn("Signed out. Enter a read token.");
  });
}

wire();
start();
