// Helpers of the Node interop scripts: JSON lines out, answers from the Python test in, npm
// bullmq producers and socket.io-client listeners, each wait bounded so a script never hangs.
import { randomUUID } from 'node:crypto';
import { createInterface } from 'node:readline';
import { Queue } from 'bullmq';
import { io } from 'socket.io-client';

export const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const WAIT_MS = Number(process.env.INTEROP_WAIT_MS || 30000);

/** One JSON line on stdout: what the Python test reads and asserts on. */
export function print(line) {
  process.stdout.write(`${JSON.stringify(line)}\n`);
}

// The Python test answers requests (e.g. a mailed code) with one JSON line on stdin each.
const answers = [];
const askers = [];
const stdin = createInterface({ input: process.stdin });
stdin.on('line', (line) => {
  const message = JSON.parse(line);
  if (askers.length) askers.shift()(message);
  else answers.push(message);
});

export function ask(request) {
  print({ need: request });
  return bounded(
    new Promise((resolve) => (answers.length ? resolve(answers.shift()) : askers.push(resolve))),
    `an answer to ${JSON.stringify(request)}`,
  );
}

export function bounded(promise, what, ms = WAIT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no ${what} within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Collects one event of a socket so that a test can wait for a matching one. */
export function listen(socket, event) {
  const seen = [];
  const waiters = [];
  socket.on(event, (payload) => {
    const i = waiters.findIndex((w) => w.match(payload));
    if (i >= 0) waiters.splice(i, 1)[0].resolve(payload);
    else seen.push(payload);
  });
  return {
    seen,
    next(match = () => true, what = event) {
      const i = seen.findIndex(match);
      if (i >= 0) return Promise.resolve(seen.splice(i, 1)[0]);
      return bounded(new Promise((resolve) => waiters.push({ match, resolve })), what);
    },
  };
}

/** Connects; resolves with the socket, or rejects with the server's refusal. */
export function connect(url, auth) {
  const socket = io(url, { transports: ['websocket'], reconnection: false, auth });
  return bounded(
    new Promise((resolve, reject) => {
      socket.once('connect', () => resolve(socket));
      socket.once('connect_error', (err) => {
        socket.close();
        reject(err);
      });
    }),
    'Socket.IO connection',
  );
}

export function redisConnection() {
  const url = new URL(env('REDIS_URL'));
  const db = Number(url.pathname.replace('/', '') || 0);
  return { host: url.hostname, port: Number(url.port || 6379), db };
}

const queues = new Map();
export function queue(name) {
  if (!queues.has(name)) queues.set(name, new Queue(name, { connection: redisConnection() }));
  return queues.get(name);
}

export async function closeQueues() {
  await Promise.all([...queues.values()].map((q) => q.close()));
}

/** Shortens secrets in what is printed: lines are for people to read as well. */
export function shown(value) {
  if (Array.isArray(value)) return value.map(shown);
  if (value && typeof value === 'object') {
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [
        k,
        ['token', 'refresh_token'].includes(k) && typeof v === 'string' ? `${v.slice(0, 12)}…` : shown(v),
      ]),
    );
  }
  return value;
}

// What a job's stored returnvalue must never hold (DESIGN section 4, results at rest): any
// credential (blanked as "[redacted]"), or a full phone number (masked with •). Kept apart from
// Gatehouse's own list on purpose: this is the Node reader's view of the contract.
const CREDENTIALS = [
  'token', 'access_token', 'refresh_token', 'id_token', 'mfa_token', 'code', 'otp', 'secret',
  'otpauth_uri', 'qr_svg', 'recovery_codes',
];
const PHONES = ['phone', 'phone_pending'];
const isSecret = (key, path, v) =>
  path !== 'code' && // the top-level `code` is a refusal's machine code
  v !== null &&
  v !== undefined &&
  ((CREDENTIALS.includes(key) && v !== '[redacted]') ||
    (PHONES.includes(key) && typeof v === 'string' && !v.includes('\u2022')));

/** The paths of a stored result that hold a credential or a full phone number. */
export function secretsIn(value, path = '') {
  if (Array.isArray(value)) return value.flatMap((v, i) => secretsIn(v, `${path}[${i}]`));
  if (!value || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([k, v]) => {
    const at = path ? `${path}.${k}` : k;
    return isSecret(k, at, v) ? [at] : secretsIn(v, at);
  });
}

/** A result without its credentials and phones: what the pushed and the stored copy share. */
function shared(value, path = '') {
  if (Array.isArray(value)) return value.map((v, i) => shared(v, `${path}[${i}]`));
  if (!value || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([k]) => {
        const at = path ? `${path}.${k}` : k;
        return at === 'code' || !(CREDENTIALS.includes(k) || PHONES.includes(k));
      })
      .map(([k, v]) => [k, shared(v, path ? `${path}.${k}` : k)]),
  );
}

/** Submits a seed-style job with a producer-chosen jobId and waits for its notification on
 * `listener`; also reads the job back from Redis as a Node consumer would, and names any
 * credential its stored returnvalue holds (`returnvalue_secrets`, which must be empty). */
export async function submit(listener, step, queueName, data, name = queueName) {
  const jobId = `node-${step}-${randomUUID()}`;
  const notified = listener.next((n) => n.job_id === jobId, `notification for ${step}`);
  const job = await queue(queueName).add(name, data, {
    jobId,
    attempts: 3,
    backoff: { type: 'exponential', delay: 1000 },
  });
  const notification = await notified;
  const stored = await finished(queueName, jobId);
  const { job_id: _id, queue: _q, ...result } = notification;
  // The push carries the whole result; Redis keeps it without credentials (and phones masked).
  const matches = JSON.stringify(shared(stored.returnvalue)) === JSON.stringify(shared(result));
  print({
    step,
    queue: queueName,
    name,
    job_id: job.id,
    notification: shown(notification),
    state: stored.state,
    returnvalue_matches: matches,
    returnvalue_secrets: secretsIn(stored.returnvalue),
    ...(matches ? {} : { returnvalue: shown(stored.returnvalue) }),
  });
  return notification;
}

async function finished(queueName, jobId) {
  return bounded(
    (async () => {
      for (;;) {
        // The state first: a job read before its state is final may predate its return value.
        const state = await queue(queueName).getJobState(jobId);
        if (state === 'completed' || state === 'failed') {
          const job = await queue(queueName).getJob(jobId);
          return { state, returnvalue: job.returnvalue };
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })(),
    `end of job ${jobId}`,
  );
}

export async function main(run) {
  try {
    await run();
    print({ done: true });
  } catch (err) {
    print({ error: String(err && err.stack ? err.stack : err) });
    process.exitCode = 1;
  } finally {
    await closeQueues().catch(() => {});
    stdin.close();
    // socket.io-client and ioredis keep timers alive; the script's work is done.
    setTimeout(() => process.exit(), 100).unref();
  }
}
