// The live feed: the server's Server-Sent Events (/v1/stream), read with fetch().
//
// Why fetch and not EventSource: an EventSource cannot send an Authorization header, so a
// token would have to go in the URL (see api.js); and it resumes on its own terms. Here the
// stream is parsed by hand (the "event", "id" and "data" fields of the SSE format, events
// ended by a blank line) and resumed exactly:
//
// - it starts after the seq the caller gives: the page of decisions the feed shows says how
//   many records the log held when it was read (log_size), so the stream starts after
//   log_size - 1 (`?after=`) and nothing recorded in between is lost;
// - every reconnect sends `Last-Event-ID:` the last seq delivered, so the server resends
//   from the next one;
// - seqs must arrive one after the other: a repeat is dropped, a gap (which the server never
//   makes) ends the connection and resumes after the last seq delivered.
//
// A connection that brings nothing for 20 s (the server sends a keep-alive every 5 s) is
// taken for dead and made again; after a failure it waits 0.5 s, doubling up to 10 s, or
// until the browser says it is online again. `X-Log-Newest` tells how far the log reached
// when the stream began: until then the state is "catching up".
"use strict";

import { AuthError, authHeaders, problemDetail, url } from "./api.js";

const SILENCE_MS = 20000;

export class LiveStream {
  // after: the newest seq already shown (-1: none); onDecision(seq, line);
  // onState(state, detail) with state "connecting", "catching-up", "live", "reconnecting";
  // onAuth(AuthError) when the server wants a token.
  constructor({ after, onDecision, onState, onAuth }) {
    this.last = after;
    this.target = after;
    this.onDecision = onDecision;
    this.onState = onState;
    this.onAuth = onAuth;
    this.stopped = true;
    this.abort = null;
    this.wake = null;
    this.online = () => this.wake && this.wake();
  }

  start() {
    this.stopped = false;
    window.addEventListener("online", this.online);
    this.loop();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener("online", this.online);
    if (this.abort) this.abort.abort();
    if (this.wake) this.wake();
  }

  report() {
    if (this.last < this.target) this.onState("catching-up", this.target - this.last);
    else this.onState("live");
  }

  async loop() {
    let delay = 500;
    while (!this.stopped) {
      const control = new AbortController();
      this.abort = control;
      let silence = null;
      const arm = () => {
        clearTimeout(silence);
        silence = setTimeout(() => control.abort(), SILENCE_MS);
      };
      try {
        const headers = { ...authHeaders(), Accept: "text/event-stream" };
        const params = {};
        if (this.last >= 0) headers["Last-Event-ID"] = String(this.last);
        else params.after = "-1";
        this.onState("connecting");
        arm();
        const response = await fetch(url("/v1/stream", params), {
          headers, signal: control.signal, cache: "no-store",
        });
        if (response.status === 401 || response.status === 403) {
          clearTimeout(silence);
          this.stopped = true;
          this.onAuth(new AuthError(response.status, await problemDetail(response)));
          return;
        }
        if (!response.ok) throw new Error(await problemDetail(response));
        const newest = Number(response.headers.get("X-Log-Newest"));
        this.target = Number.isFinite(newest) ? Math.max(newest, this.last) : this.last;
        this.report();
        delay = 500;
        await this.read(response.body.pipeThrough(new TextDecoderStream()).getReader(), arm);
      } catch (e) {
        // A network failure, a dead connection, or a gap: resume after the last seq.
      } finally {
        clearTimeout(silence);
        control.abort(); // whatever ended the reading, the connection ends with it
      }
      if (this.stopped) return;
      this.onState("reconnecting", delay);
      await new Promise(resolve => {
        this.wake = resolve;
        setTimeout(resolve, delay);
      });
      this.wake = null;
      delay = Math.min(delay * 2, 10000);
    }
  }

  async read(reader, arm) {
    let buffer = "";
    let event = { type: "", id: null, data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || this.stopped) return;
      arm();
      buffer += value;
      let start = 0;
      let end;
      while ((end = buffer.indexOf("\n", start)) >= 0) {
        let line = buffer.slice(start, end);
        start = end + 1;
        if (line.endsWith("\r")) line = line.slice(0, -1);
        if (line === "") {
          this.dispatch(event);
          event = { type: "", id: null, data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // a comment: the keep-alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") event.type = text;
        else if (field === "id") event.id = text;
        else if (field === "data") event.data.push(text);
      }
      buffer = buffer.slice(start);
    }
  }

  dispatch(event) {
    if (event.type !== "decision" || event.id === null || !/^[0-9]+$/.test(event.id)) return;
    const seq = Number(event.id);
    if (seq <= this.last) return; // sent again after a reconnect: already shown
    if (seq !== this.last + 1) throw new Error(`gap: seq ${seq} after ${this.last}`);
    this.last = seq;
    this.target = Math.max(this.target, seq);
    this.onDecision(seq, event.data.join("\n"));
    if (seq === this.target || seq % 50 === 0) this.report();
  }
}
