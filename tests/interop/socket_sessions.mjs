// A victim's socket.io-client socket on api node 2, its session ended through api node 1 (logout,
// a session deleted from another device, a password change): the socket must hear
// `session.revoked` once and be disconnected within a second, and a `verify-user` job's result
// pushed to `user:<id>` afterwards reaches a live socket of the user but not the victim's.
// Prints one JSON line per scenario, with the times measured from the revoking HTTP call.
import { randomUUID } from 'node:crypto';
import { bounded, connect, env, listen, main, print, queue } from './lib.mjs';

const api1 = env('API1');
const api2 = env('API2');
const email = env('EMAIL');
const newPassword = env('NEW_PASSWORD');
let password = env('PASSWORD');

async function call(method, path, body, token) {
  const headers = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  const reply = await fetch(`${api1}${path}`, {
    method,
    headers,
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: reply.status, body: await reply.json() };
}

async function login() {
  const reply = await call('POST', '/api/auth/login', { email, password });
  if (reply.status !== 200) throw new Error(`login: ${reply.status} ${JSON.stringify(reply.body)}`);
  return reply.body.data;
}

const sessionOf = (token) =>
  JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()).sid;

/** A socket on node 2 with every event it hears and when, and its disconnection. */
async function watch(token) {
  const socket = await connect(api2, { token });
  const heard = [];
  socket.onAny((event, payload) => heard.push({ event, payload, at: performance.now() }));
  const gone = new Promise((resolve) =>
    socket.on('disconnect', (reason) => resolve({ reason, at: performance.now() })),
  );
  return { socket, heard, gone: () => bounded(gone, 'disconnection') };
}

async function scenario(action) {
  const victim = await login();
  const other = await login();
  const userId = victim.user.id;
  const mine = await watch(victim.token);
  const theirs = await watch(other.token);

  const start = performance.now();
  let reply;
  if (action === 'logout') {
    reply = await call('POST', '/api/auth/logout', { refresh_token: victim.refresh_token });
  } else if (action === 'delete-session') {
    reply = await call('DELETE', `/api/auth/sessions/${sessionOf(victim.token)}`, null, other.token);
  } else {
    const body = { password: newPassword, current_password: password };
    reply = await call('PATCH', '/api/auth/profile', body, victim.token);
    password = newPassword;
  }
  const answered = performance.now();
  const gone = await mine.gone();

  // A live socket of the user: the other device's, or after a password change (which ended
  // every session) a new session's, opened at once.
  let witness = theirs;
  if (action === 'password') {
    await theirs.gone();
    witness = await watch((await login()).token);
  }
  const notes = listen(witness.socket, 'notification');
  const jobId = `node-sockets-${action}-${randomUUID()}`;
  const notified = notes.next((n) => n.job_id === jobId, `notification of ${jobId}`);
  await queue('verify-user').add(
    'verify-user',
    { email, password, notify: `user:${userId}` },
    { jobId },
  );
  const note = await notified;

  const revoked = mine.heard.filter((h) => h.event === 'session.revoked');
  print({
    step: action,
    status: reply.status,
    session_id: sessionOf(victim.token),
    revoked: revoked.map((h) => h.payload),
    revoked_after_ms: revoked.length ? Math.round(revoked[0].at - start) : null,
    disconnected_after_ms: Math.round(gone.at - start),
    disconnected_after_answer_ms: Math.round(gone.at - answered),
    reason: gone.reason,
    victim_events: mine.heard.map((h) => h.event),
    victim_connected: mine.socket.connected,
    witness_connected: witness.socket.connected,
    witness_heard_result: note.success === true && typeof note.data?.refresh_token === 'string',
  });
  for (const socket of [mine.socket, theirs.socket, witness.socket]) socket.close();
}

await main(async () => {
  for (const action of ['logout', 'delete-session', 'password']) await scenario(action);
});
