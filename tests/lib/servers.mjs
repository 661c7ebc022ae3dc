// Test fixtures around the broker: a webhook endpoint that records what it is
// sent, and clean-up of a test's Redis keys.
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import { freePort } from './broker.mjs';

/** A local webhook endpoint: `url` to configure (any path works), `events` as received, `close()`. */
export async function hookReceiver() {
  const port = await freePort();
  const events = [];
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      events.push(...JSON.parse(body).events);
      res.end('ok');
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${port}/`, events, close: () => (server.closeAllConnections(), server.close()) };
}

/** Deletes every Redis key under `keyPrefix:` (a test's cluster state). */
export function dropKeys(redisUrl, keyPrefix) {
  const port = new URL(redisUrl).port || '6379';
  const keys = execFileSync('redis-cli', ['-p', port, '--scan', '--pattern', `${keyPrefix}:*`], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (let i = 0; i < keys.length; i += 100) execFileSync('redis-cli', ['-p', port, 'DEL', ...keys.slice(i, i + 100)]);
}
