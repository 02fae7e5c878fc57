// The load side of the job-to-socket latency benchmark (benchmarks/jobs.py): CLIENTS
// socket.io-client connections (websocket) to `gatehouse api`, then read-user jobs added with npm
// bullmq's Queue (straight to Redis, not through the HTTP door) at RATE a second for SECONDS,
// open loop: job i is due at start + i / RATE whatever happened to the jobs before it, and its
// latency counts from that moment to its `notification` at the client it names (`notify`: the
// sid). Jobs due in the first WARMUP_SECONDS are not counted. Reads the access tokens (a JSON
// list) on stdin; prints one JSON line of figures. With DETAIL=1 the line also has, for the
// slowest 1 %, where the time went, from the job hashes BullMQ keeps (`slowest`).
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { env, redisConnection, require } from './common.mjs';

const { Queue } = require('bullmq');
const { io } = require('socket.io-client');

const rate = Number(env('RATE', '500'));
const seconds = Number(env('SECONDS', '6'));
const warmup = Number(env('WARMUP_SECONDS', '1'));
const clientCount = Number(env('CLIENTS', '10'));
const options = JSON.parse(env('JOB_OPTIONS', '{}'));
const gatehouse = env('GATEHOUSE_URL');
const connection = redisConnection();

let input = '';
for await (const chunk of process.stdin) input += chunk;
const tokens = JSON.parse(input);

const due = new Map(); // job id -> [due time, counted?]
const latencies = [];
const detail = process.env.DETAIL === '1';
const arrivals = []; // [latency, job id, wall-clock arrival] (DETAIL=1)
const total = Math.round(rate * seconds);
const counted = Math.round(rate * warmup);
let sent = 0;
let received = 0;
let refused = 0;
let finish = () => {};
const finished = new Promise((resolve) => {
  finish = resolve;
});

function heard(note) {
  const now = performance.now();
  const entry = due.get(note.job_id);
  if (!entry) return;
  due.delete(note.job_id);
  if (!note.success) refused += 1;
  if (entry[1]) {
    received += 1;
    latencies.push(now - entry[0]);
    if (detail) arrivals.push([now - entry[0], note.job_id, Date.now()]);
  }
  if (due.size === 0 && sent === total) finish();
}

const sockets = await Promise.all(
  Array.from({ length: clientCount }, () => {
    const socket = io(gatehouse, { transports: ['websocket'], reconnection: false });
    socket.on('notification', heard);
    return new Promise((resolve, reject) => {
      socket.once('connect', () => resolve(socket));
      socket.once('connect_error', reject);
    });
  }),
);
const queue = new Queue('read-user', { connection, prefix: 'bull' });
await queue.waitUntilReady();

let errors = 0;
const start = performance.now() + 50;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
while (sent < total) {
  const now = performance.now();
  // Every job due by now goes out now (a late timer sends a burst: open loop).
  while (sent < total && start + (sent * 1000) / rate <= now) {
    const i = sent;
    const jobId = randomUUID();
    due.set(jobId, [start + (i * 1000) / rate, i >= counted]);
    sent += 1;
    const data = { token: tokens[i % tokens.length], notify: sockets[i % sockets.length].id };
    queue.add('read-user', data, { ...options, jobId }).catch(() => {
      errors += 1;
      due.delete(jobId);
    });
  }
  const next = start + (sent * 1000) / rate - performance.now();
  if (next > 0) await sleep(Math.max(0, next - 0.5));
}
const sendSeconds = (performance.now() - start) / 1000;
if (due.size === 0) finish();
await Promise.race([finished, sleep(15000)]);

latencies.sort((a, b) => a - b);
const pct = (p) =>
  latencies.length
    ? latencies[Math.min(latencies.length - 1, Math.max(0, Math.ceil((p / 100) * latencies.length) - 1))]
    : null;
const round = (x) => (x === null ? null : Math.round(x * 100) / 100);
const figures = {
  offered_per_s: rate,
  sent: total,
  sent_per_s: Math.round((total / sendSeconds) * 10) / 10,
  measured: total - counted,
  received,
  refused,
  submit_errors: errors,
  p50_ms: round(pct(50)),
  p90_ms: round(pct(90)),
  p99_ms: round(pct(99)),
  max_ms: round(pct(100)),
};
if (detail) {
  // Where the slowest jobs spent their time, from the job hashes BullMQ keeps (wall clock, ms):
  // queued = picked by a worker - added; after = notification heard - picked.
  arrivals.sort((a, b) => b[0] - a[0]);
  const IORedis = require('ioredis');
  const client = new IORedis(connection);
  const slowest = [];
  for (const [latency, jobId, arrived] of arrivals.slice(0, Math.max(5, Math.ceil(arrivals.length / 100)))) {
    const [added, picked, finished] = await client.hmget(`bull:read-user:${jobId}`, 'timestamp', 'processedOn', 'finishedOn');
    slowest.push({ latency: round(latency), queued: picked - added, after: arrived - picked, finished_after_note: finished - arrived });
  }
  figures.slowest = slowest;
  client.disconnect();
}
process.stdout.write(`${JSON.stringify(figures)}\n`);
for (const socket of sockets) socket.close();
await queue.close();
process.exit(0);
