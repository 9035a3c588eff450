// The verification badge: what the server's verifier checked last (verify_watch), when,
// and what it covered (the records since the last verified checkpoint, or every record in a
// full pass), when the last full pass ran; "checking…" while the first check runs, "no
// records yet" for a log its server has not written to yet; and the
// findings (kind, file:line, seq range) when it fails, opened unasked when it just failed.
"use strict";

import { $, cell } from "./records.js";

const clock = seconds => `${new Date(seconds * 1000).toISOString().slice(11, 19)} UTC`;

function coverage(v) {
  const signed = v.signed_size
    ? `signed through seq ${v.signed_size - 1} (checkpoint of ${v.signed_size})`
    : v.checkpoint
      ? "no signed checkpoint matches the records"
      : `no record signed yet (${v.records} await the first checkpoint)`;
  const what = v.mode === "incremental"
    ? `the records from seq ${v.checked_from} on and the checkpoints signed since`
    : "every record (a full pass)";
  const full = v.full && v.full.ran_at ? `; last full pass ${clock(v.full.ran_at)}` : "";
  return { signed, what, full };
}

// Show the server's last verification (`v`, from /v1/verify); `previous` is the one before.
export function renderBadge(v, previous) {
  const badge = $("badge");
  const word = $("badge-word");
  const detail = $("badge-detail");
  if (v.status === "ok" || v.status === "failed") {
    const c = coverage(v);
    const ok = v.status === "ok";
    badge.className = `badge ${ok ? "ok" : "failed"}`;
    word.textContent = ok ? "✓ verified" : "✗ verification FAILED";
    const running = v.checking && v.checking.full
      ? ` · a full pass is running${v.checking.total ? ` (${Math.floor((100 * v.checking.done) / v.checking.total)}%)` : ""}`
      : "";
    detail.textContent = (ok
      ? `${v.records} records, ${c.signed} · checked ${clock(v.ran_at)}${c.full}`
      : `${v.failures} finding${v.failures === 1 ? "" : "s"} · checked ${clock(v.ran_at)} — show`) + running;
    $("verification-summary").textContent =
      `Checked at ${clock(v.ran_at)} (${v.seconds} s): ${c.what}. ${v.records} records, ${c.signed}${c.full}.`;
  } else if (v.status === "empty") {
    badge.className = "badge checking";
    word.textContent = "no records yet";
    detail.textContent = `the log holds no record yet · checked ${clock(v.ran_at)}`;
    $("verification-summary").textContent = `Checked at ${clock(v.ran_at)}: the log holds no record yet.`;
  } else {
    const c = v.checking;
    badge.className = "badge checking";
    word.textContent = c ? "checking…" : "not verified yet";
    detail.textContent = !c
      ? "waiting for the server's first verification"
      : c.total
        ? `the first verification is running (${Math.floor((100 * c.done) / c.total)}% read)`
        : "the first verification is running";
    $("verification-summary").textContent = "No verification has finished yet.";
  }
  const rows = (v.findings || []).map(f => {
    const tr = document.createElement("tr");
    tr.className = f.failure ? "failure" : "note";
    const place = [f.file && `${f.file}${f.line ? `:${f.line}` : ""}`,
      f.seq_from != null && (f.seq_to != null && f.seq_to !== f.seq_from
        ? `seq ${f.seq_from}–${f.seq_to}` : `seq ${f.seq_from}`)].filter(Boolean).join(", ");
    tr.append(cell(f.kind, "kind"), cell(place || "the log", "where"), cell(f.message, "what"));
    return tr;
  });
  document.querySelector("#findings tbody").replaceChildren(...rows);
  $("findings").hidden = rows.length === 0;
  if (v.status === "failed" && (!previous || previous.status !== "failed")) {
    openVerification(true); // it just failed: the findings, unasked
  }
}

export function openVerification(open) {
  $("verification").hidden = !open;
  $("badge").setAttribute("aria-expanded", String(open));
}
