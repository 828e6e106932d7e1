// An independent lean client of the hub, to check the project's load test against.
//
//     node tools/probe/probe.mjs plan.json        (started by `python -m tools.loadtest --client node`)
//
// It shares no code with the Python load test: its own WebSocket client (below, on node:net),
// its own HTTP client (below, on node:net too), its own clock (CLOCK_MONOTONIC)
// and its own arithmetic. It plays the same workload: every squad says hello, goes on duty, sends a
// position every `pos_interval` s (each squad a random phase), and on an offer acknowledges
// it and walks accept -> en route -> arrive -> resolve, each step on the previous `ok`;
// requests are posted open loop at `rate` per second (a request counts from when it was due).
// Frames use the `dispatch.v1.msgpack` subprotocol, as the phones and the load test do, packed
// by its own library (@msgpack/msgpack); `"subprotocol": "json"` in the plan uses
// `dispatch.v1.json` instead (the hub then turns every frame it sends into JSON).
//
// The squads and the requests are shared out over `workers` threads (default: one per 6,000
// squads, as the load test's client processes), each with its own event loop, sockets and
// position wheel, so that no single loop is late to send its ticks or to read its offers. The
// main thread keeps the schedule: all times are CLOCK_MONOTONIC (process.hrtime), one clock
// for every thread.
//
// plan.json: {host, token, squads: [[id, token, port, lat, lon]], requests: [[port, category,
// lat, lon, due_s]], rate, duration, pos_interval, warmup, drain, workers}. It prints
// `measure-start` and `measure-end` lines (the caller reads the hub's CPU then) and a last line
// of JSON: its result.

import { readFileSync } from "node:fs";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { createHash, randomBytes, randomFillSync } from "node:crypto";
import net from "node:net";
import { Decoder, Encoder } from "@msgpack/msgpack";

const plan = isMainThread ? JSON.parse(readFileSync(process.argv[2], "utf8")) : workerData.plan;
const JSON_FRAMES = plan.subprotocol === "json";
const SUBPROTOCOL = JSON_FRAMES ? "dispatch.v1.json" : "dispatch.v1.msgpack";
// One encoder and one decoder a thread: the library's encode() and decode() make a new one
// (a 2 KB buffer, an empty key cache) for every frame. With 10,000 squads at a position every
// 2 s, reusing them took the probe from 35 % to 29 % of a core and its late ticks' p99 from 10-16
// to 5-7 ms.
const encoder = new Encoder();
const decoder = new Decoder();
// A packed frame is copied at once into its masked frame: the encoder's own buffer will do.
const pack = JSON_FRAMES ? (frame) => Buffer.from(JSON.stringify(frame))
  : (frame) => encoder.encodeSharedRef(frame);
const unpack = JSON_FRAMES ? (data) => JSON.parse(data.toString()) : (data) => decoder.decode(data);
const OPCODE = JSON_FRAMES ? 0x1 : 0x2;
const SLOTS = 100;
const JITTER = 0.0002;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Milliseconds on CLOCK_MONOTONIC: the same clock in every thread (performance.now is not).
const now = () => Number(process.hrtime.bigint() / 1000n) / 1000;

// ---- a lean WebSocket client (RFC 6455): what a squad's phone needs, no more ----
//
// Why not the `ws` package (the probe's client until session 13): with 5,000 squads at a
// position a second it took 24 % of a core against the load test's 13 %, and that extra CPU,
// on two cores shared with the hub, slowed the hub it measured. Half of its time went to
// node:net's stream machinery (a new 64 KB buffer and a Readable push for every read) and to
// its own receiver, itself a Writable stream. Here every read lands in one buffer a thread
// (node:net's `onread`), frames are parsed in place, and a frame goes out as one masked buffer.
// Opening handshake, masked frames out (a fresh random key each), unmasked frames in (text,
// binary, continuation, ping, pong, close); no extension is offered, so none can be agreed.

const GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_MESSAGE = 1 << 20; // the hub's frames are small: anything bigger is a broken stream
const READ_BUFFER = Buffer.allocUnsafe(1 << 16); // every socket's reads, one at a time
const MASKS = Buffer.allocUnsafe(1 << 12); // random masking keys, refilled when used up
let maskAt = MASKS.length;

class ProtocolError extends Error {} // the hub's bytes break RFC 6455: the link is closed

function maskedFrame(opcode, payload) {
  const size = payload.length;
  const head = size < 126 ? 2 : size < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(head + 4 + size);
  frame[0] = 0x80 | opcode;
  if (size < 126) frame[1] = 0x80 | size;
  else if (size < 65536) { frame[1] = 0x80 | 126; frame.writeUInt16BE(size, 2); }
  else { frame[1] = 0x80 | 127; frame.writeBigUInt64BE(BigInt(size), 2); }
  if (maskAt === MASKS.length) { randomFillSync(MASKS); maskAt = 0; }
  MASKS.copy(frame, head, maskAt, maskAt + 4);
  maskAt += 4;
  for (let i = 0; i < size; i++) frame[head + 4 + i] = payload[i] ^ frame[head + (i & 3)];
  return frame;
}

class Link {
  // on.open(), on.message(payload, isText) (payload valid only during the call), on.close(error)
  constructor(port, path, subprotocol, on) {
    this.on = on;
    this.subprotocol = subprotocol;
    this.key = randomBytes(16).toString("base64");
    this.open = false;
    this.closed = false;
    this.pending = null; // bytes of an incomplete frame (or handshake), copied out of READ_BUFFER
    this.fragments = null; // [opcode, ...payloads] of a fragmented message
    this.socket = net.connect({ host: plan.host, port, noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (size) => this.read(size) } });
    this.socket.on("connect", () => this.socket.write(`GET ${path} HTTP/1.1\r\n`
      + `Host: ${plan.host}:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`
      + `Sec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n`
      + `Sec-WebSocket-Protocol: ${subprotocol}\r\n\r\n`));
    this.socket.on("error", (error) => this.close(error));
    this.socket.on("close", () => this.close(new Error("closed")));
  }

  send(opcode, payload) {
    if (!this.closed) this.socket.write(maskedFrame(opcode, payload));
  }

  close(error) {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.on.close(error);
  }

  read(size) {
    let bytes = READ_BUFFER.subarray(0, size);
    if (this.pending) { bytes = Buffer.concat([this.pending, bytes]); this.pending = null; }
    let at = 0;
    try {
      if (!this.open) {
        const end = bytes.indexOf("\r\n\r\n");
        if (end < 0) { this.pending = Buffer.from(bytes); return; }
        this.handshake(bytes.toString("latin1", 0, end));
        at = end + 4;
      }
      while (!this.closed) {
        const available = bytes.length - at;
        if (available < 2) break;
        const first = bytes[at];
        const second = bytes[at + 1];
        if (first & 0x70) throw new ProtocolError("reserved bits set: no extension was agreed");
        if (second & 0x80) throw new ProtocolError("a masked frame from the server");
        let length = second & 0x7f;
        let offset = 2;
        if (length === 126) {
          if (available < 4) break;
          length = bytes.readUInt16BE(at + 2);
          offset = 4;
        } else if (length === 127) {
          if (available < 10) break;
          length = Number(bytes.readBigUInt64BE(at + 2));
          offset = 10;
        }
        if (length > MAX_MESSAGE) throw new ProtocolError(`a frame of ${length} bytes`);
        if (available < offset + length) break;
        const payload = bytes.subarray(at + offset, at + offset + length);
        at += offset + length;
        this.frame((first & 0x80) !== 0, first & 0x0f, payload);
      }
    } catch (error) {
      if (!(error instanceof ProtocolError)) throw error; // the probe's own bug: stop it
      this.close(error);
      return;
    }
    if (at < bytes.length && !this.closed) this.pending = Buffer.from(bytes.subarray(at));
  }

  handshake(head) {
    const [status, ...lines] = head.split("\r\n");
    if (status.split(" ")[1] !== "101") throw new ProtocolError(`upgrade refused: ${status}`);
    const headers = {};
    for (const line of lines) {
      const colon = line.indexOf(":");
      if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim();
    }
    const accept = createHash("sha1").update(this.key + GUID).digest("base64");
    if (headers["sec-websocket-accept"] !== accept) throw new ProtocolError("wrong Sec-WebSocket-Accept");
    if (headers["sec-websocket-protocol"] !== this.subprotocol) {
      throw new ProtocolError(`subprotocol ${headers["sec-websocket-protocol"]} chosen`);
    }
    if (headers["sec-websocket-extensions"]) throw new ProtocolError("an extension was agreed");
    this.open = true;
    this.on.open();
  }

  frame(fin, opcode, payload) {
    if (opcode === 0x9) { this.send(0xa, payload); return; } // ping: pong the same bytes
    if (opcode === 0xa) return;
    if (opcode === 0x8) {
      this.send(0x8, payload.subarray(0, 2)); // echo the code, then end
      this.close(new Error(`closed by the hub: ${payload.length >= 2 ? payload.readUInt16BE(0) : 1005}`));
      return;
    }
    if (opcode === 0x0) {
      if (!this.fragments) throw new ProtocolError("a continuation frame without a message");
      this.fragments.push(Buffer.from(payload));
      if (!fin) return;
      const [kind, ...parts] = this.fragments;
      this.fragments = null;
      this.on.message(Buffer.concat(parts), kind === 0x1);
    } else if (opcode === 0x1 || opcode === 0x2) {
      if (this.fragments) throw new ProtocolError("a new message inside a fragmented one");
      if (fin) this.on.message(payload, opcode === 0x1);
      else this.fragments = [opcode, Buffer.from(payload)];
    } else {
      throw new ProtocolError(`opcode ${opcode}`);
    }
  }
}

const ackMs = [];
const stepMs = [];
const errors = {};
const tickLateMs = [];
let positionsSent = 0;
let duplicates = 0;

class Squad {
  constructor([id, token, port, lat, lon]) {
    Object.assign(this, { id, token, port, lat, lon });
    this.ready = false;
    this.lastSeq = 0;
    this.sent = new Map(); // command id -> [kind, assignment, at]
    this.count = 0;
  }

  connect() {
    return new Promise((resolve, reject) => {
      this.link = new Link(this.port, "/ws/field", SUBPROTOCOL, {
        open: () => this.send({ t: "hello", squad: this.id, token: this.token, last_seq: 0 }),
        message: (payload) => {
          const frame = unpack(payload); // decoded before the read buffer is reused
          for (const f of Array.isArray(frame) ? frame : [frame]) this.handle(f, resolve);
        },
        close: (error) => { this.ready = false; reject(error); },
      });
    });
  }

  send(frame) { this.link.send(OPCODE, pack(frame)); }

  command(kind, assignment) {
    const id = `${this.id}-p${++this.count}`;
    this.sent.set(id, [kind, assignment, now()]);
    this.send({ t: kind, assignment, id });
  }

  handle(f, welcomed) {
    const arrived = now();
    switch (f.t) {
      case "welcome":
        this.ready = true;
        this.send({ t: "duty", on: true });
        welcomed();
        break;
      case "offer":
        if (f.seq <= this.lastSeq) { duplicates++; break; }
        this.lastSeq = f.seq;
        parentPort.postMessage({ t: "offer", assignment: f.assignment, at: arrived });
        this.send({ t: "ack", seq: f.seq });
        this.command("accept", f.assignment);
        break;
      case "revoke":
        this.lastSeq = Math.max(this.lastSeq, f.seq);
        this.send({ t: "ack", seq: f.seq });
        break;
      case "ok": {
        const sent = this.sent.get(f.id);
        if (!sent) break;
        this.sent.delete(f.id);
        const [kind, assignment, at] = sent;
        (kind === "accept" ? ackMs : stepMs).push(arrived - at);
        const next = { accept: "enroute", enroute: "arrive", arrive: "resolve" }[kind];
        if (next) this.command(next, assignment);
        break;
      }
      case "error": {
        const sent = f.id ? this.sent.get(f.id) : undefined;
        if (sent) this.sent.delete(f.id);
        if (sent && sent[0] === "arrive" && f.code === "invalid_transition") {
          this.command("resolve", sent[1]); // the hub saw the arrival from the position
        } else {
          errors[f.code] = (errors[f.code] || 0) + 1;
        }
        break;
      }
    }
  }

  position() {
    if (!this.ready) return;
    this.send({ t: "pos", lat: this.lat + (Math.random() - 0.5) * JITTER,
                lon: this.lon + (Math.random() - 0.5) * JITTER, ts: Date.now() / 1000 });
    positionsSent++;
  }
}

async function connectAll(squads, concurrency = 64) {
  let next = 0;
  let failed = 0;
  async function worker() {
    while (next < squads.length) {
      const squad = squads[next++];
      try { await squad.connect(); } catch { failed++; }
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker));
  return failed;
}

async function positions(squads, stop) {
  const slots = Array.from({ length: SLOTS }, () => []);
  for (const squad of squads) slots[Math.floor(Math.random() * SLOTS)].push(squad);
  const tick = (plan.pos_interval * 1000) / SLOTS;
  let at = now();
  for (let i = 0; !stop.done; i = (i + 1) % SLOTS) {
    tickLateMs.push(now() - at); // how late this tick's positions leave
    for (const squad of slots[i]) squad.position();
    at += tick;
    await sleep(Math.max(0, at - now()));
  }
}

// ---- a lean HTTP/1.1 client: keep-alive connections to each hub port, one request at a time
// on each ----
//
// Why not node:http or undici: each took 0.5-0.8 ms of the probe's CPU a request (their
// request objects, header handling, streams, promise chains, llhttp), several % of a core at
// 50-100 requests/s, where the load test's client spends a few tens of µs. The hub answers an
// intake with a Content-Length body (JSON), which is all this reads.

const idleLinks = new Map(); // port -> [HttpLink] ready for a request
const httpLinks = new Set();

class HttpLink {
  constructor(port) {
    this.port = port;
    this.done = null; // the pending request's resolve
    this.pending = null; // bytes of an incomplete response, copied out of READ_BUFFER
    this.timer = null;
    this.head = `POST /api/v1/requests HTTP/1.1\r\nHost: ${plan.host}:${port}\r\n`
      + `Authorization: Bearer ${plan.token}\r\nContent-Type: application/json\r\n`;
    this.socket = net.connect({ host: plan.host, port, noDelay: true,
      onread: { buffer: READ_BUFFER, callback: (size) => this.read(size) } });
    this.socket.on("error", () => this.fail());
    this.socket.on("close", () => this.fail());
    httpLinks.add(this);
  }

  post(body, done) {
    this.done = done;
    this.timer = setTimeout(() => this.fail(), 10000);
    this.socket.write(`${this.head}Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  }

  read(size) {
    let bytes = READ_BUFFER.subarray(0, size);
    if (this.pending) { bytes = Buffer.concat([this.pending, bytes]); this.pending = null; }
    if (!this.done) { this.fail(); return; } // bytes nobody asked for: a broken stream
    const end = bytes.indexOf("\r\n\r\n");
    if (end < 0) { this.pending = Buffer.from(bytes); return; }
    const head = bytes.toString("latin1", 0, end);
    const length = /\r\ncontent-length:[ \t]*(\d+)/i.exec(head);
    if (!head.startsWith("HTTP/1.1 ") || !length) { this.fail(); return; }
    const stop = end + 4 + Number(length[1]);
    if (bytes.length < stop) { this.pending = Buffer.from(bytes); return; }
    if (bytes.length > stop) { this.fail(); return; } // more than one response: not ours
    const done = this.done;
    this.done = null;
    clearTimeout(this.timer);
    if (/\r\nconnection:[ \t]*close/i.test(head)) this.close();
    else idleLinks.get(this.port).push(this);
    done([Number(head.slice(9, 12)), bytes.toString("utf8", end + 4, stop)]);
  }

  fail() {
    this.close();
    if (this.done) {
      clearTimeout(this.timer);
      const done = this.done;
      this.done = null;
      done([0, ""]);
    }
  }

  close() {
    httpLinks.delete(this);
    const idle = idleLinks.get(this.port);
    const at = idle.indexOf(this);
    if (at >= 0) idle.splice(at, 1);
    this.socket.destroy();
  }
}

function post(port, body) {
  if (!idleLinks.has(port)) idleLinks.set(port, []);
  const link = idleLinks.get(port).pop() || new HttpLink(port);
  return new Promise((resolve) => link.post(body, resolve));
}

// Open loop, as the load test's: one schedule walks the requests in the order they are due
// and sends each when due, whatever happened to the others (one timer at a time, not one a
// request).
async function intakes(requests, start) {
  const done = [];
  for (const [i, port, category, lat, lon, at] of [...requests].sort((a, b) => a[5] - b[5])) {
    const due = start + at * 1000; // the load test's schedule: the same arrivals for both
    if (due > now()) await sleep(due - now());
    done.push(intake(i, port, category, lat, lon, due));
  }
  await Promise.all(done);
}

async function intake(i, port, category, lat, lon, due) {
  const body = JSON.stringify({ caller_phone: `1390${String(i % 1e7).padStart(7, "0")}`,
    category, description: "probe request", lat, lon });
  const [status, text] = await post(port, body);
  const reply = status === 201 ? JSON.parse(text) : {};
  parentPort.postMessage({ t: "request", due, status, assignment: reply.assignment || "" });
}

function percentile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = ((sorted.length - 1) * q) / 100;
  const low = Math.floor(rank);
  const high = Math.min(low + 1, sorted.length - 1);
  return +(sorted[low] + (sorted[high] - sorted[low]) * (rank - low)).toFixed(3);
}

const summary = (values, qs = [50, 95, 99]) =>
  Object.fromEntries(qs.map((q) => [`p${q}`, percentile(values, q)]));

// ---- a worker thread: its share of the squads and of the requests ----

async function work() {
  const squads = plan.squads.map((s) => new Squad(s));
  const failed = await connectAll(squads);
  const stop = { done: false };
  const wheel = positions(squads, stop);
  parentPort.postMessage({ t: "connected", failed });
  parentPort.on("message", async (message) => {
    if (message.t === "start") {
      await intakes(workerData.requests, message.start);
    } else if (message.t === "mark") {
      parentPort.postMessage({ t: "mark", positionsSent });
    } else if (message.t === "stop") {
      stop.done = true;
      await wheel;
      for (const squad of squads) squad.link.close(new Error("stopped"));
      for (const link of [...httpLinks]) link.close();
      parentPort.postMessage({ t: "report", ackMs, stepMs, errors, tickLateMs, duplicates });
      parentPort.close();
    }
  });
}

// ---- the main thread: the schedule, the measure window, the result ----

async function main() {
  const count = plan.workers || Math.max(1, Math.ceil(plan.squads.length / 6000));
  const offersAt = new Map(); // assignment -> when the offer arrived (any worker)
  const requests = [];
  const waiting = new Map(); // message kind -> [resolve, count, values]
  const collect = (kind) => new Promise((resolve) => waiting.set(kind, [resolve, count, []]));
  const workers = Array.from({ length: count }, (_, w) => {
    const share = { ...plan, squads: plan.squads.filter((_, i) => i % count === w) };
    const worker = new Worker(new URL(import.meta.url), { workerData: {
      plan: { ...share, requests: [] },
      requests: plan.requests.map((r, i) => [i, ...r]).filter(([i]) => i % count === w),
    } });
    worker.on("message", (message) => {
      if (message.t === "offer") offersAt.set(message.assignment, message.at);
      else if (message.t === "request") requests.push(message);
      else {
        const entry = waiting.get(message.t);
        entry[2].push(message);
        if (--entry[1] === 0) { waiting.delete(message.t); entry[0](entry[2]); }
      }
    });
    worker.on("error", (error) => { console.error(error); process.exit(1); });
    return worker;
  });
  const broadcast = (message) => workers.forEach((worker) => worker.postMessage(message));
  const mark = async () => {
    const marks = collect("mark");
    broadcast({ t: "mark" });
    return (await marks).reduce((sum, m) => sum + m.positionsSent, 0);
  };
  const failed = (await collect("connected")).reduce((sum, m) => sum + m.failed, 0);
  await sleep(plan.warmup * 1000);
  const cpuBefore = process.cpuUsage(); // the whole process: every thread
  const sentBefore = await mark();
  const started = now();
  console.log("measure-start");
  broadcast({ t: "start", start: started + 10 });
  while (requests.length < plan.requests.length) await sleep(20);
  await sleep(Math.max(0, started + plan.duration * 1000 - now()));
  const elapsed = (now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const sent = (await mark()) - sentBefore;
  console.log("measure-end");
  const offered = requests.filter((r) => r.assignment);
  const drainUntil = now() + plan.drain * 1000;
  while (offered.some((r) => !offersAt.has(r.assignment)) && now() < drainUntil) {
    await sleep(50);
  }
  const reportsDone = collect("report");
  broadcast({ t: "stop" });
  const reports = await reportsDone;
  const all = (key) => reports.flatMap((r) => r[key]);
  const errors = {};
  for (const r of reports) {
    for (const [code, n] of Object.entries(r.errors)) errors[code] = (errors[code] || 0) + n;
  }
  const tickLateMs = all("tickLateMs");
  const dispatch = offered.filter((r) => offersAt.has(r.assignment))
    .map((r) => offersAt.get(r.assignment) - r.due);
  const result = {
    client: "node",
    workers: count,
    squads_connected: plan.squads.length - failed,
    dispatch_ms: summary(dispatch),
    ack_ms: summary(all("ackMs"), [50, 99]),
    step_ms: summary(all("stepMs"), [50, 99]),
    requests: requests.filter((r) => r.status === 201).length,
    requests_failed: requests.filter((r) => r.status !== 201).length,
    requests_queued_at_intake: requests.filter((r) => r.status === 201 && !r.assignment).length,
    frames_lost: offered.length - dispatch.length,
    duplicates: reports.reduce((sum, r) => sum + r.duplicates, 0),
    command_errors: errors,
    positions_sent_per_s: +(sent / elapsed).toFixed(1),
    probe_cpu_percent: +((100 * (cpu.user + cpu.system)) / 1e6 / elapsed).toFixed(1),
    // how late the position ticks left (a late tick sends its squads' positions in a burst)
    tick_late_ms: { ...summary(tickLateMs),
                    max: +tickLateMs.reduce((m, v) => Math.max(m, v), 0).toFixed(3) },
  };
  await Promise.all(workers.map((worker) => worker.terminate()));
  console.log(JSON.stringify(result));
}

const run = isMainThread ? main : work;
run().catch((error) => { console.error(error); process.exit(1); });
