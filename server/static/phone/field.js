/* The field protocol over one WebSocket, as dispatch_field/client.py does it (the reference
 * client), for the phone app:
 *   - subprotocol dispatch.v1.msgpack, one MessagePack map per binary message;
 *   - hello with the squad's id, token and last_seq first; the hub replays what is missing;
 *   - numbered frames (offer, revoke, notice): a duplicate (seq <= last_seq) is dropped, each
 *     new one is handed to the app, which saves it, and only then acknowledged (cumulative);
 *   - commands carry an id and the time the crew acted (at); they wait in `pending` (saved on
 *     the phone) until the hub answers ok or error, and are sent again after every welcome
 *     with the same id (the hub applies an id once); `busy` is retried a little later;
 *   - a transient close (anything but 4100-4199) reconnects with a growing, jittered delay;
 *     a terminal one stops and says why;
 *   - a command unanswered for a while means the socket is dead without knowing it (a phone
 *     leaving the network): it is dropped and a new one opened.
 *
 *   const link = new FieldLink({url, squad, token, lastSeq, pending, save, onFrame, onState})
 *   link.start();  link.command("accept", assignment, {})  -> id;  link.pos(lat, lon, acc)
 *   link.duty(true);  link.reconnectNow() (back on screen, network back);  link.stop()
 *   save({lastSeq, pending}) -> Promise, awaited before an ack;  onFrame(frame) -> Promise;
 *   onState(state, detail): "connecting" | "live" | "offline" | "stopped" (detail: close code) */
(function () {
  "use strict";

  const SUBPROTOCOL = "dispatch.v1.msgpack";
  const KEEPALIVE_MS = 15000; // an idle phone repeats its ack this often (the hub closes a
  // squad it has not heard from for DISPATCH_OFFLINE_AFTER_S)
  const ANSWER_WAIT_MS = 10000; // a command unanswered this long: the socket is dead
  const BUSY_RETRY_MS = 800;
  const BACKOFF_MS = [500, 15000];

  function terminal(code) {
    return code >= 4100 && code < 4200;
  }

  class FieldLink {
    constructor(options) {
      this.url = options.url;
      this.squad = options.squad;
      this.token = options.token;
      this.lastSeq = options.lastSeq || 0;
      this.pending = new Map((options.pending || []).map((frame) => [frame.id, frame]));
      this._save = options.save || (() => Promise.resolve());
      this._onFrame = options.onFrame || (() => Promise.resolve());
      this._onState = options.onState || (() => {});
      this.state = "connecting";
      this.offsetS = 0; // hub clock - phone clock, from welcome.server_time
      this._ws = null;
      this._live = false;
      this._stopped = false;
      this._attempt = 0;
      this._timer = null;
      this._chain = Promise.resolve();
      this._counter = 0;
      this._lastSent = Date.now();
      this._sentAt = new Map(); // command id -> when it was last sent
      this._tick = setInterval(() => this._watch(), 1000);
      this._wake = () => this.reconnectNow();
      window.addEventListener("online", this._wake);
    }

    start() {
      this._connect();
    }

    stop() {
      this._stopped = true;
      clearInterval(this._tick);
      clearTimeout(this._timer);
      window.removeEventListener("online", this._wake);
      this._abandon(1000);
    }

    /* Hub time now, in epoch seconds: deadlines count on the hub's clock. */
    now() {
      return Date.now() / 1000 + this.offsetS;
    }

    /* A step on an assignment; its id. Sent now if connected, else after the next welcome.
     * `at` is when the crew acted, on the hub's clock as far as the phone knows it. */
    command(type, assignment, fields) {
      this._counter += 1;
      const id = `${this.squad}-${Date.now().toString(16)}-${this._counter}`;
      const frame = { t: type, assignment, id, at: Math.round(this.now() * 1000) / 1000,
        ...(fields || {}) };
      this.pending.set(id, frame);
      this._persist();
      if (this._live) this._sendCommand(frame);
      return id;
    }

    pos(lat, lon, acc) {
      const frame = { t: "pos", lat, lon, ts: Math.round(this.now() * 1000) / 1000 };
      if (acc !== null && acc !== undefined) frame.acc = acc;
      return this._send(frame);
    }

    duty(on) {
      return this._send({ t: "duty", on: Boolean(on) });
    }

    get live() {
      return this._live;
    }

    // ---- the connection -------------------------------------------------------------------

    _connect() {
      if (this._stopped) return;
      this._setState("connecting");
      let ws;
      try {
        ws = new WebSocket(this.url, [SUBPROTOCOL]);
      } catch (error) {
        this._closed(1006);
        return;
      }
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      ws.onopen = () => {
        ws.send(MessagePack.encode({ t: "hello", squad: this.squad, token: this.token,
          last_seq: this.lastSeq }));
        this._lastSent = Date.now();
      };
      ws.onmessage = (message) => {
        if (this._ws !== ws || !(message.data instanceof ArrayBuffer)) return;
        let frame;
        try {
          frame = MessagePack.decode(new Uint8Array(message.data));
        } catch (error) {
          return; // not a frame of ours: the hub never sends one
        }
        // One frame at a time, in order: each waits for the previous one's save.
        this._chain = this._chain.then(() => this._received(frame)).catch(() => {});
      };
      ws.onclose = (close) => {
        if (this._ws === ws) this._closed(close.code);
      };
    }

    _closed(code) {
      this._ws = null;
      this._live = false;
      if (this._stopped) return;
      if (terminal(code)) {
        this._stopped = true;
        this._setState("stopped", code);
        return;
      }
      this._setState("offline", code);
      this._attempt += 1;
      const [low, high] = BACKOFF_MS;
      const delay = Math.min(high, low * 2 ** Math.min(this._attempt, 10));
      clearTimeout(this._timer);
      this._timer = setTimeout(() => this._connect(), Math.random() * delay);
    }

    /* Leave the current socket to itself (its events are ignored from now on). */
    _abandon(code) {
      const ws = this._ws;
      this._ws = null;
      this._live = false;
      if (ws) {
        try {
          ws.close(code);
        } catch (error) {
          /* already closing */
        }
      }
    }

    reconnectNow() {
      if (this._stopped || this._live) return;
      this._abandon(1000);
      clearTimeout(this._timer);
      this._attempt = 0;
      this._connect();
    }

    _setState(state, detail) {
      this.state = state;
      this._onState(state, detail);
    }

    _watch() {
      if (!this._live) return;
      const now = Date.now();
      for (const [id, sentAt] of this._sentAt) {
        if (this.pending.has(id) && now - sentAt > ANSWER_WAIT_MS) {
          this._sentAt.clear();
          this._abandon(4000);
          this._closed(1006);
          return;
        }
      }
      if (now - this._lastSent >= KEEPALIVE_MS) this._send({ t: "ack", seq: this.lastSeq });
    }

    _send(frame) {
      if (!this._live || !this._ws || this._ws.readyState !== WebSocket.OPEN) return false;
      this._ws.send(MessagePack.encode(frame));
      this._lastSent = Date.now();
      return true;
    }

    _sendCommand(frame) {
      if (this._send(frame)) this._sentAt.set(frame.id, Date.now());
    }

    _persist() {
      return this._save({ lastSeq: this.lastSeq, pending: [...this.pending.values()] });
    }

    // ---- frames from the hub --------------------------------------------------------------

    async _received(frame) {
      switch (frame.t) {
        case "welcome":
          // A hub behind our count lost frames (its Redis lost data): take its count.
          this.lastSeq = Math.min(this.lastSeq, frame.last_seq);
          if (frame.server_time) this.offsetS = frame.server_time - Date.now() / 1000;
          this._live = true;
          this._attempt = 0;
          await this._persist();
          this._setState("live");
          await this._onFrame(frame);
          for (const command of this.pending.values()) this._sendCommand(command);
          return;
        case "offer":
        case "revoke":
        case "notice":
          if (frame.seq > this.lastSeq) {
            await this._onFrame(frame); // the app saves its work first
            this.lastSeq = frame.seq;
            await this._persist();
          }
          this._send({ t: "ack", seq: this.lastSeq }); // a duplicate is acknowledged too
          return;
        case "resync":
          this.lastSeq = frame.last_seq;
          await this._onFrame(frame);
          await this._persist();
          return;
        case "ok":
          if (this.pending.delete(frame.id)) {
            this._sentAt.delete(frame.id);
            await this._persist();
          }
          await this._onFrame(frame);
          return;
        case "error":
          if (frame.id && this.pending.has(frame.id)) {
            this._sentAt.delete(frame.id);
            if (frame.code === "busy") {
              const command = this.pending.get(frame.id);
              setTimeout(() => this._live && this._sendCommand(command), BUSY_RETRY_MS);
              return;
            }
            this.pending.delete(frame.id);
            await this._persist();
          }
          await this._onFrame(frame);
          return;
        default:
          await this._onFrame(frame);
      }
    }
  }

  window.FieldLink = FieldLink;
})();
