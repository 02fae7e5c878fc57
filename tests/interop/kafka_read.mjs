// A kafkajs consumer, as the seeds' Node services read Gatehouse's topics (no codec plug-in
// registered): prints one JSON line per record of TOPIC, then {"done": true} once it has COUNT;
// {"error": …} if kafkajs cannot read them (a codec it does not know), and exits 0 either way.
import { Kafka, logLevel } from 'kafkajs';

const brokers = (process.env.KAFKA_BROKERS || '').split(',').filter(Boolean);
const topic = process.env.TOPIC;
const count = Number(process.env.COUNT);
const waitMs = Number(process.env.INTEROP_WAIT_MS || 30000);
if (!brokers.length || !topic || !count) throw new Error('KAFKA_BROKERS, TOPIC and COUNT are needed');

const print = (line) => process.stdout.write(`${JSON.stringify(line)}\n`);
const kafka = new Kafka({ clientId: 'gatehouse-interop', brokers, logLevel: logLevel.NOTHING });
const consumer = kafka.consumer({
  groupId: `gatehouse-interop-${process.pid}-${Date.now()}`,
  // A record it cannot decode is an answer here, not something to retry for ever.
  retry: { retries: 0, restartOnFailure: async () => false },
});

let seen = 0;
let finished = false;
async function finish(line) {
  if (finished) return;
  finished = true;
  clearTimeout(timer);
  print(line);
  // disconnect waits for a running eachMessage: never let it hold the answer back.
  await Promise.race([consumer.disconnect(), new Promise((ok) => setTimeout(ok, 2000))]);
  process.exit(0);
}
const timer = setTimeout(() => finish({ error: `timed out with ${seen} of ${count} records` }), waitMs);

consumer.on(consumer.events.CRASH, ({ payload }) =>
  finish({ error: `${payload.error.name}: ${payload.error.message}` }),
);
await consumer.connect();
await consumer.subscribe({ topic, fromBeginning: true });
await consumer.run({
  eachMessage: async ({ message }) => {
    const headers = Object.fromEntries(
      Object.entries(message.headers || {}).map(([name, value]) => [name, String(value)]),
    );
    print({ key: String(message.key), value: JSON.parse(String(message.value)), headers });
    seen += 1;
    if (seen === count) setImmediate(() => finish({ done: true }));
  },
});
