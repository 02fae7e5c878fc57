// The seeds' whole user journey as a Node client of Gatehouse would run it: every operation a
// job submitted with npm bullmq, every result received as a Socket.IO `notification` with
// socket.io-client. Prints one JSON line per step; the Python test asserts on them and answers
// the mailed codes on stdin.
import { ask, connect, env, listen, main, print, submit } from './lib.mjs';

const url = env('GATEHOUSE_URL');
const email = env('EMAIL');
const password = env('PASSWORD');
const newPassword = env('NEW_PASSWORD');

await main(async () => {
  // Anonymous: reached through its own sid.
  const anonymous = await connect(url);
  const notes = listen(anonymous, 'notification');
  const sid = anonymous.id;
  print({ step: 'connected', anonymous: true });

  await submit(notes, 'verification', 'verification', {
    channel: 'email',
    to: email,
    purpose: 'register',
    notify: sid,
  });
  const { code } = await ask({ code: 'register', to: email });

  const created = await submit(notes, 'create-user', 'create-user', {
    email,
    otp: code,
    password,
    name: 'Ada Lovelace',
    phone: '+14155550123',
    notify: sid,
  });
  const userId = created.data.user.id;

  const login = await submit(notes, 'verify-user', 'verify-user', { email, password, notify: sid });
  const { token } = login.data;

  // With a token: the socket joins `user:<id>`; a forged token is refused, not made anonymous.
  const account = await connect(url, { token });
  const accountNotes = listen(account, 'notification');
  const revocations = listen(account, 'session.revoked');
  print({ step: 'connected', room: 'user' });
  try {
    await connect(url, { token: `${token.slice(0, -4)}AAAA` });
    print({ step: 'forged-token-socket', refused: false });
  } catch (err) {
    print({ step: 'forged-token-socket', refused: true, message: err.message, code: err.data?.code });
  }

  await submit(accountNotes, 'read-user', 'read-user', { token, notify: `user:${userId}` });
  await submit(notes, 'update-user', 'update-user', {
    token,
    name: 'Ada King',
    notify: sid,
  });
  await submit(notes, 'sessions-list', 'sessions', { token, notify: sid }, 'list');
  // An authenticator app's set-up (left unconfirmed: the password alone still signs in below).
  await submit(notes, 'mfa-totp-setup', 'mfa', { token, notify: sid }, 'totp-setup');

  await submit(
    notes,
    'password-recovery-request',
    'password-recovery',
    { email, channel: 'email', notify: sid },
    'request',
  );
  const reset = await ask({ code: 'recovery', to: email });
  await submit(
    notes,
    'password-recovery-reset',
    'password-recovery',
    { email, otp: reset.code, new_password: newPassword, notify: sid },
    'reset',
  );
  const revoked = await revocations.next(() => true, 'session.revoked after the reset');
  print({ step: 'session.revoked', event: revoked });

  // The reset revoked every session: the old token no longer reads the profile.
  await submit(notes, 'read-user-revoked-token', 'read-user', { token, notify: sid });

  const again = await submit(notes, 'verify-user-new-password', 'verify-user', {
    email,
    password: newPassword,
    notify: sid,
  });
  const fresh = again.data.token;
  await submit(notes, 'delete-user', 'delete-user', {
    token: fresh,
    password: newPassword,
    notify: sid,
  });
  await submit(notes, 'read-user-deleted', 'read-user', { token: fresh, notify: sid });

  anonymous.close();
  account.close();
});
