// Test fixtures around the broker: a webhook endpoint that records what it is
// sent, and clean-up of a test's Redis keys.
import { execFileSync } from 'node:child_process';
import http from 'node:http';
import { freePort } from './broker.mjs';

/**
 * A local webhook endpoint: `url` to configure (any path works), `events` as received,
 * `of(channel)` those of one channel, `arrivals` as {event, at} (ms), `requests()`,
 * `close()`. `status()` decides each answer (default 200); only events of requests
 * answered 2xx are recorded.
 */
export async function hookReceiver({ status = () => 200 } = {}) {
  const port = await freePort();
  const events = [];
  const arrivals = [];
  let requests = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      requests += 1;
      const code = status();
      if (code >= 200 && code < 300) {
        for (const e of JSON.parse(body).events) {
          events.push(e);
          arrivals.push({ event: e, at: Date.now() });
        }
      }
      res.statusCode = code;
      res.end(code < 300 ? 'ok' : 'fail');
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}/`,
    events,
    arrivals,
    requests: () => requests,
    of: (channel) => events.filter((e) => e.channel === channel),
    close: () => (server.closeAllConnections(), server.close()),
  };
}

/** Deletes every Redis key under `keyPrefix:` (a test's cluster state). */
export function dropKeys(redisUrl, keyPrefix) {
  const port = new URL(redisUrl).port || '6379';
  const keys = execFileSync('redis-cli', ['-p', port, '--scan', '--pattern', `${keyPrefix}:*`], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (let i = 0; i < keys.length; i += 100) execFileSync('redis-cli', ['-p', port, 'DEL', ...keys.slice(i, i + 100)]);
}
