// A private redis-server on a free loopback port, for tests that must not share
// (or that stop and restart) Redis.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './broker.mjs';

/** Starts redis-server; resolves with { port, url, stop() } once it answers. */
export async function startRedis() {
  const port = await freePort();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'redis-'));
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const deadline = Date.now() + 10000;
  while (!output.includes('Ready to accept connections')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`redis-server did not start:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A broker configuration for one node of a cluster on `redisUrl`: fast heartbeats
 * (dead nodes noticed within about 4 s), quick webhook batches, the default app, and
 * `extra` lines for the app (limits, webhooks).
 */
export function clusterConfig(redisUrl, keyPrefix = 'pusher', extra = '') {
  return `
[cluster]
redis_url = "${redisUrl}"
key_prefix = "${keyPrefix}"
heartbeat_secs = 1
node_timeout_secs = 3
[webhooks]
batch_wait_ms = 10
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
${extra}
`;
}
