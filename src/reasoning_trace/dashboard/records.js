// What the page knows of a decision, read from its stored line (exact.js), and the
// server's filter, for the decisions that arrive on the stream.
"use strict";

import { get, show } from "./exact.js";

export const $ = id => document.getElementById(id);

export function decision(map, line, seqText) {
  const seq = seqText || show(get(map, "seq"));
  const votes = get(map, "votes");
  const subject = get(map, "subject");
  const id = get(map, "id");
  return {
    seq: Number(seq),
    seqText: seq,
    id: typeof id === "string" ? id : "",
    time: String(get(map, "datetime_utc") || ""),
    timestamp: Number(show(get(map, "timestamp") ?? "0")),
    action: String(get(map, "action") ?? ""),
    approved: get(map, "approved") === true,
    votes: votes instanceof Map ? votes : new Map(),
    subject: subject instanceof Map ? subject : new Map(),
    reason: typeof get(map, "reason") === "string" ? get(map, "reason") : "",
    line,
  };
}

export const vetoes = d => [...d.votes].filter(([, v]) => get(v, "passed") === false).map(([k]) => k);

const SPAN = { s: 1, m: 60, h: 3600, d: 86400, w: 604800 };

// The server's filter (query.Filter.matches), for decisions that arrive on the stream.
export function matches(d, f) {
  if (f.action && d.action !== f.action) return false;
  if (f.approved && String(d.approved) !== f.approved) return false;
  if (f.voter && get(d.votes.get(f.voter), "passed") !== false) return false;
  if (f.since) {
    const m = /^([0-9.]+)([smhdw])$/.exec(f.since);
    if (m && d.timestamp < Date.now() / 1000 - Number(m[1]) * SPAN[m[2]]) return false;
  }
  for (const item of f.subject) {
    const at = item.indexOf("=");
    const key = item.slice(0, at);
    const wanted = item.slice(at + 1);
    if (!d.subject.has(key)) return false;
    const stored = d.subject.get(key);
    if (stored === null || show(stored) !== wanted) return false;
  }
  return true;
}

// A table cell (its label heads it when the table is shown as cards, on narrow screens).
export function cell(text, cls, label) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  if (label) td.dataset.label = label;
  return td;
}
