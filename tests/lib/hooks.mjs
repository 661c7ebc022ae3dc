// A webhook receiver on a free loopback port that records every event it accepts.
import http from 'node:http';
import { freePort } from './broker.mjs';

/**
 * `status()` decides the answer to each request (default 200); only events of
 * requests answered 2xx are recorded, with the time they arrived.
 */
export async function hookReceiver({ status = () => 200 } = {}) {
  const port = await freePort();
  const events = [];
  let requests = 0;
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (d) => (body += d));
    req.on('end', () => {
      requests += 1;
      const code = status();
      if (code >= 200 && code < 300) {
        for (const e of JSON.parse(body).events) events.push({ ...e, at: Date.now() });
      }
      res.statusCode = code;
      res.end(code < 300 ? 'ok' : 'fail');
    });
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${port}/`,
    events,
    requests: () => requests,
    of: (channel) => events.filter((e) => e.channel === channel),
    close: () => (server.closeAllConnections(), server.close()),
  };
}
