// Adds jobs the way a Node service does (npm bullmq Queue.add, straight to Redis): the queue's
// name in argv[2], a JSON array of job data in argv[3]; prints the job ids as one JSON line.
import { Queue } from 'bullmq';
import { redisConnection } from './lib.mjs';

const queue = new Queue(process.argv[2], { connection: redisConnection() });
const ids = [];
for (const data of JSON.parse(process.argv[3])) {
  const job = await queue.add(process.argv[2], data, { attempts: 1 });
  ids.push(job.id);
}
process.stdout.write(`${JSON.stringify(ids)}\n`);
await queue.close();
process.exit(0);
