// The inclusion proof of one record, checked in the browser (RFC 9162 section 2.1.3.2).
//
// The leaf is the SHA-256 of 0x00 and the record's line as stored (the API gives it as text;
// UTF-8 encoding gives back its bytes); each step hashes 0x01, left, right. The root reached
// must be the root of the checkpoint whose signature the server's verifier checked (the one
// the badge names). This is the algorithm of proof.verify_inclusion, step for step; indexes
// are BigInts, so trees beyond 2**31 records are walked right.
"use strict";

import { sha256 } from "./sha256.js";

const encoder = new TextEncoder();

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

export const fromBase64 = text => Uint8Array.from(atob(text), c => c.charCodeAt(0));
export const toBase64 = bytes => btoa(String.fromCharCode(...bytes));
export const same = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);
export const leafHash = line => sha256(concat(Uint8Array.of(0), encoder.encode(line)));
const nodeHash = (left, right) => sha256(concat(Uint8Array.of(1), left, right));

// The root that `leaf` at `index` leads to through `path` in a tree of `size` leaves.
export async function rootFromPath(index, size, leaf, path) {
  let fn = BigInt(index);
  let sn = BigInt(size) - 1n;
  if (fn < 0n || fn > sn) throw new Error(`leaf ${index} is not in a tree of ${size}`);
  let r = leaf;
  for (const p of path) {
    if (sn === 0n) throw new Error("the proof is longer than the path to the root");
    if (fn & 1n || fn === sn) {
      r = await nodeHash(p, r);
      if (!(fn & 1n)) {
        while (!(fn & 1n || fn === 0n)) { fn >>= 1n; sn >>= 1n; }
      }
    } else {
      r = await nodeHash(r, p);
    }
    fn >>= 1n;
    sn >>= 1n;
  }
  if (sn !== 0n) throw new Error("the proof is shorter than the path to the root");
  return r;
}

// Whether `line` is leaf `seq` of the tree of `size` whose root is `root` (base64), by `path`
// (base64 hashes). Returns {ok, why}.
export async function checkInclusion({ line, seq, size, path, root }) {
  try {
    const leaf = await leafHash(line);
    const reached = await rootFromPath(seq, size, leaf, path.map(fromBase64));
    if (same(reached, fromBase64(root))) return { ok: true, why: "" };
    return { ok: false, why: "the path from its leaf does not reach the signed root" };
  } catch (e) {
    return { ok: false, why: e.message };
  }
}
