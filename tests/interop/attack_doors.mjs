// Issue 12's attacks through the queues, as an attacker with Redis access and npm bullmq would
// run them (no HTTP route, so no per-address limit): a password guessed over `verify-user` jobs,
// sign-up codes asked over `verification` jobs, and the recovery phone moved with a stolen
// access token over `update-user`. One JSON line per job; the Python test asserts on them.
import { connect, env, listen, main, print, submit } from './lib.mjs';

const url = env('GATEHOUSE_URL');
const email = env('EMAIL');
const stolen = env('STOLEN_TOKEN');
const thiefPhone = env('THIEF_PHONE');
const target = env('SIGNUP_TARGET');

await main(async () => {
  const socket = await connect(url);
  const notes = listen(socket, 'notification');
  const notify = socket.id;

  // Guessing the password: each guess a job of its own.
  for (let i = 0; i < 12; i += 1) {
    await submit(notes, `guess-${i}`, 'verify-user', {
      email,
      password: `Guess-number-${i}-of-many`,
      notify,
    });
  }
  // Sign-up codes to one address, as fast as jobs go.
  for (let i = 0; i < 4; i += 1) {
    await submit(notes, `signup-code-${i}`, 'verification', {
      channel: 'email',
      to: target,
      purpose: 'register',
      notify,
    });
  }
  // The stolen token points the recovery phone at the thief, then reads the profile.
  await submit(notes, 'move-phone', 'update-user', { token: stolen, phone: thiefPhone, notify });
  await submit(notes, 'read-profile', 'read-user', { token: stolen, notify });
  socket.close();
});
