// Stored lines read without losing a digit.
//
// JSON.parse turns every number into a double: 12345678901234567890 becomes
// 12345678901234567000 and 0.1000000000000000000001 becomes 0.1. The dashboard shows what
// is stored, so it parses records here instead: numbers are kept as their text (Num),
// objects as Maps (key order kept; a key such as "__proto__" is only a key), strings are
// decoded by JSON.parse itself (every escape as the standard says).
"use strict";

export class Num {
  constructor(text) { this.text = text; }
  toString() { return this.text; }
}

const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;

export function parse(text) {
  let i = 0;
  const fail = what => { throw new SyntaxError(`${what} at character ${i}`); };
  const space = () => { while (i < text.length && " \t\n\r".includes(text[i])) i++; };
  const expect = c => { space(); if (text[i] !== c) fail(`expected ${c}`); i++; };

  function string() {
    if (text[i] !== '"') fail("expected a string");
    let j = i + 1;
    while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
    if (j >= text.length) fail("unterminated string");
    const value = JSON.parse(text.slice(i, j + 1));
    i = j + 1;
    return value;
  }

  function value() {
    space();
    const c = text[i];
    if (c === "{") {
      i++;
      const map = new Map();
      space();
      if (text[i] === "}") { i++; return map; }
      for (;;) {
        space();
        const key = string();
        expect(":");
        map.set(key, value());
        space();
        if (text[i] === ",") { i++; continue; }
        expect("}");
        return map;
      }
    }
    if (c === "[") {
      i++;
      const list = [];
      space();
      if (text[i] === "]") { i++; return list; }
      for (;;) {
        list.push(value());
        space();
        if (text[i] === ",") { i++; continue; }
        expect("]");
        return list;
      }
    }
    if (c === '"') return string();
    for (const [word, v] of [["true", true], ["false", false], ["null", null]]) {
      if (text.startsWith(word, i)) { i += word.length; return v; }
    }
    NUMBER.lastIndex = i;
    const m = NUMBER.exec(text);
    if (!m) fail("unexpected character");
    i = NUMBER.lastIndex;
    return new Num(m[0]);
  }

  const out = value();
  space();
  if (i !== text.length) fail("text after the value");
  return out;
}

// A value as text: strings as they are, numbers as stored, anything else as compact JSON.
export function show(v) {
  if (typeof v === "string") return v;
  return json(v);
}

export function json(v) {
  if (v instanceof Num) return v.text;
  if (v instanceof Map) return `{${[...v].map(([k, x]) => `${JSON.stringify(k)}:${json(x)}`).join(",")}}`;
  if (Array.isArray(v)) return `[${v.map(json).join(",")}]`;
  return JSON.stringify(v);
}

// A member of a parsed object, or undefined.
export const get = (obj, key) => (obj instanceof Map ? obj.get(key) : undefined);
