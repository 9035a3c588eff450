// One decision in the detail panel: its votes, subject and stored line, and its inclusion
// proof checked in this browser (proof.js) against the checkpoint the badge names: VERIFIED
// only when this browser reached that checkpoint's root itself; ALTERED when its stored bytes
// do not (and the server's own check agrees); NOT YET SIGNED when no verified checkpoint
// covers it. Each request owns the panel until the next click: a late answer for a row
// clicked before is dropped (and its request aborted).
"use strict";

import { ApiError, AuthError, getText } from "./api.js";
import { get, parse, show } from "./exact.js";
import { checkInclusion } from "./proof.js";
import { $, cell, decision } from "./records.js";

function proofWords(kind, text) {
  const p = $("detail-proof");
  const mark = document.createElement("strong");
  mark.textContent = kind;
  mark.className = { VERIFIED: "approved", ALTERED: "rejected", "NOT VERIFIED": "rejected" }[kind] || "";
  p.replaceChildren(mark, document.createTextNode(` — ${text}`));
  p.dataset.status = kind;
}

// Check the record's proof here: its line's leaf, the path, the root the badge's checkpoint
// signs. Says VERIFIED only when this browser reached that root itself.
async function proofStatus(d, body, v) {
  const cp = v && v.checkpoint;
  if (!cp) {
    if (!v || (v.status !== "ok" && v.status !== "failed")) {
      return ["WAITING", "the server's first verification has not finished; checked when it has"];
    }
    return ["NOT YET SIGNED", "no checkpoint whose signature verified covers it yet"];
  }
  if (d.seq >= cp.size) {
    return ["NOT YET SIGNED", `recorded after the newest verified checkpoint, which covers seq 0–${cp.size - 1}; checked again when the next one is verified`];
  }
  const proof = get(body, "proof");
  const signed = get(body, "signed");
  const serverSays = get(signed, "status");
  const line = get(body, "line");
  if (!(proof instanceof Map) || typeof line !== "string") {
    return ["NOT VERIFIED", `the server gave no proof (${get(signed, "detail") || "none"})`];
  }
  const result = await checkInclusion({
    line,
    seq: d.seqText,
    size: show(get(proof, "tree_size")),
    path: get(proof, "proof") || [],
    root: cp.root,
  });
  const where = `the checkpoint of ${cp.size} records signed ${cp.datetime_utc}`;
  if (result.ok && show(get(proof, "tree_size")) === String(cp.size)) {
    return ["VERIFIED", `this browser hashed its stored bytes (SHA-256) and followed its ${(get(proof, "proof") || []).length}-step inclusion proof to the root of ${where}, the checkpoint the badge verified`];
  }
  if (serverSays === "unverified") return ["NOT VERIFIED", get(signed, "detail") || result.why];
  if (serverSays === "verified") {
    return ["NOT VERIFIED", `the proof the server sent does not reach the root of ${where} in this browser (${result.why})`];
  }
  return ["ALTERED", `its stored bytes do not hash to the root of ${where}: the record was changed after it was signed (${result.why})`];
}

export class DetailPanel {
  // verification(): the badge's last /v1/verify answer; onSubject("KEY=VALUE"): show that
  // subject's history; onAuth(AuthError): the server wants a token.
  constructor({ verification, onSubject, onAuth }) {
    this.verification = verification;
    this.onSubject = onSubject;
    this.onAuth = onAuth;
    this.request = 0; // which request owns the panel: a late answer for another is dropped
    this.abort = null;
    this.shown = null; // {seq, status} of the decision in the panel
  }

  // Show the decision `key` (id or seq); keepScroll: check again in place.
  async open(key, { keepScroll = false } = {}) {
    const mine = ++this.request;
    if (this.abort) this.abort.abort();
    const control = new AbortController();
    this.abort = control;
    const panel = $("detail");
    panel.hidden = false;
    panel.setAttribute("aria-busy", "true");
    if (!keepScroll) {
      $("detail-title").textContent = `#${key} …`;
      $("detail-proof").textContent = "";
      $("detail-proof").dataset.status = "";
    }
    const v = this.verification();
    const cp = v && v.checkpoint;
    try {
      const params = { proof: "true" };
      if (cp && /^[0-9]+$/.test(key) && Number(key) < cp.size) params.size = cp.size;
      let body = parse(await getText(`/v1/decisions/${encodeURIComponent(key)}`, params, { signal: control.signal }));
      if (mine !== this.request) return; // a later click owns the panel
      const line = get(body, "line");
      let map = get(body, "decision");
      if (typeof line === "string") {
        try { map = parse(line); } catch (e) { /* shown from the server's reading below */ }
      }
      const served = get(body, "decision");
      const d = decision(map, line, show(get(served, "seq")));
      if (!d.id) d.id = String(get(served, "id") || ""); // the original module's lines have none
      if (cp && !params.size && d.seq < cp.size) { // asked by id: now the seq is known
        body = parse(await getText(`/v1/decisions/${d.seqText}`, { proof: "true", size: cp.size }, { signal: control.signal }));
        if (mine !== this.request) return;
      }
      this.render(d, typeof line === "string" ? line : "");
      const [kind, text] = await proofStatus(d, body, v);
      if (mine !== this.request) return;
      proofWords(kind, text);
      this.shown = { seq: d.seqText, status: kind };
    } catch (e) {
      if (mine !== this.request || e.name === "AbortError") return;
      if (e instanceof AuthError) { this.onAuth(e); return; }
      $("detail-title").textContent = `#${key}`;
      proofWords("NOT FOUND", e instanceof ApiError ? e.message : String(e));
    } finally {
      if (mine === this.request) panel.removeAttribute("aria-busy");
    }
  }

  render(d, line) {
    $("detail-title").textContent = `#${d.seqText} ${d.action} — ${d.approved ? "approved" : "REJECTED"}`;
    $("detail-meta").textContent = `${d.time} · ${d.id}${d.reason ? ` · ${d.reason}` : ""}`;
    document.querySelector("#detail-votes tbody").replaceChildren(...[...d.votes].map(([name, v]) => {
      const tr = document.createElement("tr");
      const passed = get(v, "passed");
      tr.append(
        cell(name),
        cell(passed === true ? "pass" : passed === false ? "FAIL" : show(v), passed === false ? "rejected" : "approved"),
        cell(typeof get(v, "reason") === "string" ? get(v, "reason") : ""),
      );
      return tr;
    }));
    document.querySelector("#detail-subject tbody").replaceChildren(...[...d.subject].map(([key, v]) => {
      const tr = document.createElement("tr");
      const history = document.createElement("td");
      const value = show(v);
      const b = document.createElement("button");
      b.type = "button";
      b.className = "link";
      b.textContent = "history";
      b.title = `every decision about ${key}=${value}`;
      b.addEventListener("click", () => this.onSubject(`${key}=${value}`));
      history.append(b);
      tr.append(cell(key), cell(value, "value"), history);
      return tr;
    }));
    $("detail-line").textContent = line;
  }

  close() {
    this.request++;
    if (this.abort) this.abort.abort();
    this.shown = null;
    $("detail").hidden = true;
  }
}
