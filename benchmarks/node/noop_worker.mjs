// The Node side of the no-op job benchmark (benchmarks/jobs.py): npm bullmq's own Worker on one
// queue, with a processor that does nothing but answer like a Gatehouse job. Prints one JSON
// line `{"ready": true}` once it consumes, and closes (finishing the jobs in flight) on SIGTERM.
//
//   REDIS_URL=redis://127.0.0.1:6379/3 QUEUE=noop CONCURRENCY=10 node benchmarks/node/noop_worker.mjs
import { env, redisConnection, require } from './common.mjs';

const { Worker } = require('bullmq');

const result = { success: true, message: 'noop', data: {} };
const worker = new Worker(env('QUEUE'), async () => result, {
  connection: redisConnection(),
  prefix: 'bull',
  concurrency: Number(process.env.CONCURRENCY || 10),
  autorun: false,
});
worker.on('error', (err) => process.stderr.write(`worker error: ${err}\n`));

const running = worker.run();
await worker.waitUntilReady();
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid })}\n`);

let closing = false;
const close = async () => {
  if (closing) return;
  closing = true;
  await worker.close();
  await running;
  process.exit(0);
};
process.on('SIGTERM', close);
process.on('SIGINT', close);
