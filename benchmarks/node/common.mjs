// What the benchmark's Node scripts share: npm packages from the interop tests' install
// (tests/interop/install, not a second copy), settings from the environment, and the Redis
// connection REDIS_URL names (its database and password included).
import { createRequire } from 'node:module';

export const require = createRequire(new URL('../../tests/interop/package.json', import.meta.url));

export const env = (name, fallback) => {
  const value = process.env[name] || fallback;
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

export function redisConnection() {
  const url = new URL(env('REDIS_URL'));
  return {
    host: url.hostname,
    port: Number(url.port || 6379),
    db: Number(url.pathname.slice(1) || 0),
    ...(url.password ? { password: decodeURIComponent(url.password) } : {}),
  };
}
