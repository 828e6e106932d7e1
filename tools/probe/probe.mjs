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
// plan.json: {host, token, squads: [[id, token, port, lat, lon]], requests: [[port, category,
// lat, lon, due_s]], rate, duration, pos_interval, warmup, drain}. It prints `measure-start` and
// `measure-end` lines (the caller reads the hub's CPU then) and a last line of JSON: its result.

import { readFileSync } from "node:fs";
import http from "node:http";
import { performance } from "node:perf_hooks";
import WebSocket from "ws";
import { decode, encode } from "@msgpack/msgpack";

const plan = JSON.parse(readFileSync(process.argv[2], "utf8"));
const JSON_FRAMES = plan.subprotocol === "json";
const SUBPROTOCOL = JSON_FRAMES ? "dispatch.v1.json" : "dispatch.v1.msgpack";
const pack = JSON_FRAMES ? (frame) => JSON.stringify(frame) : (frame) => encode(frame);
const unpack = JSON_FRAMES ? (data) => JSON.parse(data.toString()) : (data) => decode(data);
const SLOTS = 100;
const JITTER = 0.0002;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

const offersAt = new Map(); // assignment -> when the offer arrived
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
    this.sent.set(id, [kind, assignment, performance.now()]);
    this.send({ t: kind, assignment, id });
  }

  handle(f, welcomed) {
    const now = performance.now();
    switch (f.t) {
      case "welcome":
        this.ready = true;
        this.send({ t: "duty", on: true });
        welcomed();
        break;
      case "offer":
        if (f.seq <= this.lastSeq) { duplicates++; break; }
        this.lastSeq = f.seq;
        offersAt.set(f.assignment, now);
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
        (kind === "accept" ? ackMs : stepMs).push(now - at);
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
  let at = performance.now();
  for (let i = 0; !stop.done; i = (i + 1) % SLOTS) {
    tickLateMs.push(performance.now() - at); // how late this tick's positions leave
    for (const squad of slots[i]) squad.position();
    at += tick;
    await sleep(Math.max(0, at - performance.now()));
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

async function intakes() {
  const start = performance.now() + 10;
  const done = plan.requests.map(async ([port, category, lat, lon, at], i) => {
    const due = start + at * 1000; // the load test's schedule: the same arrivals for both
    await sleep(Math.max(0, due - performance.now()));
    const body = JSON.stringify({ caller_phone: `1390${String(i % 1e7).padStart(7, "0")}`,
      category, description: "probe request", lat, lon });
    const [status, text] = await post(port, body);
    const reply = status === 201 ? JSON.parse(text) : {};
    return { due, status, assignment: reply.assignment || "" };
  });
  return Promise.all(done);
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

async function main() {
  const squads = plan.squads.map((s) => new Squad(s));
  const failed = await connectAll(squads);
  const stop = { done: false };
  const wheel = positions(squads, stop);
  await sleep(plan.warmup * 1000);
  const cpuBefore = process.cpuUsage();
  const started = performance.now();
  const sentBefore = positionsSent;
  console.log("measure-start");
  const requests = plan.requests.length ? await intakes() : [];
  await sleep(Math.max(0, started + plan.duration * 1000 - performance.now()));
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpuBefore);
  const sent = positionsSent - sentBefore;
  console.log("measure-end");
  const offered = requests.filter((r) => r.assignment);
  const drainUntil = performance.now() + plan.drain * 1000;
  while (offered.some((r) => !offersAt.has(r.assignment)) && performance.now() < drainUntil) {
    await sleep(50);
  }
  stop.done = true;
  await wheel;
  const dispatch = offered.filter((r) => offersAt.has(r.assignment))
    .map((r) => offersAt.get(r.assignment) - r.due);
  const result = {
    client: "node",
    squads_connected: squads.length - failed,
    dispatch_ms: summary(dispatch),
    ack_ms: summary(ackMs, [50, 99]),
    step_ms: summary(stepMs, [50, 99]),
    requests: requests.filter((r) => r.status === 201).length,
    requests_failed: requests.filter((r) => r.status !== 201).length,
    requests_queued_at_intake: requests.filter((r) => r.status === 201 && !r.assignment).length,
    frames_lost: offered.length - dispatch.length,
    duplicates,
    command_errors: errors,
    positions_sent_per_s: +(sent / elapsed).toFixed(1),
    probe_cpu_percent: +((100 * (cpu.user + cpu.system)) / 1e6 / elapsed).toFixed(1),
    // how late the position ticks left (a late tick sends its squads' positions in a burst)
    tick_late_ms: { ...summary(tickLateMs), max: +Math.max(0, ...tickLateMs).toFixed(3) },
  };
  for (const squad of squads) squad.ws.terminate();
  agent.destroy();
  console.log(JSON.stringify(result));
}

main().catch((error) => { console.error(error); process.exit(1); });
