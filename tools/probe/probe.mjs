// An independent lean client of the hub, to check the project's load test against.
//
//     node tools/probe/probe.mjs plan.json        (started by `python -m tools.loadtest --client node`)
//
// It shares no code with the Python load test: its own WebSocket stack (the `ws` package),
// its own HTTP client (node:http with keep-alive), its own clock (performance.now) and its own
// arithmetic. It plays the same workload: every squad says hello, goes on duty, sends a
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
import http from "node:http";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import WebSocket from "ws";
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
const pack = JSON_FRAMES ? (frame) => JSON.stringify(frame) : (frame) => encoder.encode(frame);
const unpack = JSON_FRAMES ? (data) => JSON.parse(data.toString()) : (data) => decoder.decode(data);
const SLOTS = 100;
const JITTER = 0.0002;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
// Milliseconds on CLOCK_MONOTONIC: the same clock in every thread (performance.now is not).
const now = () => Number(process.hrtime.bigint() / 1000n) / 1000;

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
      const ws = new WebSocket(`ws://${plan.host}:${this.port}/ws/field`, SUBPROTOCOL,
        { perMessageDeflate: false });
      this.ws = ws;
      ws.on("open", () => this.send({ t: "hello", squad: this.id, token: this.token, last_seq: 0 }));
      ws.on("message", (data) => {
        const frame = unpack(data);
        for (const f of Array.isArray(frame) ? frame : [frame]) this.handle(f, resolve);
      });
      ws.on("error", reject);
      ws.on("close", () => { this.ready = false; reject(new Error("closed")); });
    });
  }

  send(frame) { this.ws.send(pack(frame)); }

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

const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

function post(port, body) {
  return new Promise((resolve) => {
    const request = http.request({ host: plan.host, port, path: "/api/v1/requests",
      method: "POST", agent, headers: { "Content-Type": "application/json",
        Authorization: `Bearer ${plan.token}`, "Content-Length": Buffer.byteLength(body) } },
      (response) => {
        const chunks = [];
        response.on("data", (c) => chunks.push(c));
        response.on("end", () => resolve([response.statusCode, Buffer.concat(chunks).toString()]));
      });
    request.setTimeout(10000, () => { request.destroy(); resolve([0, ""]); });
    request.on("error", () => resolve([0, ""]));
    request.end(body);
  });
}

async function intakes(requests, start) {
  const done = requests.map(async ([i, port, category, lat, lon, at]) => {
    const due = start + at * 1000; // the load test's schedule: the same arrivals for both
    await sleep(Math.max(0, due - now()));
    const body = JSON.stringify({ caller_phone: `1390${String(i % 1e7).padStart(7, "0")}`,
      category, description: "probe request", lat, lon });
    const [status, text] = await post(port, body);
    const reply = status === 201 ? JSON.parse(text) : {};
    parentPort.postMessage({ t: "request", due, status, assignment: reply.assignment || "" });
  });
  await Promise.all(done);
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
      for (const squad of squads) squad.ws.terminate();
      agent.destroy();
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
