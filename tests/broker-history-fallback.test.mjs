// Connection recovery over the HTTP fallback: pusher-js's web build in Chromium,
// on xhr_streaming only, with the pusher-recovery helper, cut off for 10 s through
// a TCP proxy the test controls while 100 events are triggered.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { launchChromium } from './lib/browser.mjs';
import { startBroker, freePort, ROOT } from './lib/broker.mjs';
import { startProxy } from './lib/proxy.mjs';
import { sdkFor } from './lib/clients.mjs';
import { sleep } from './lib/probe.mjs';

const PUSHER_WEB = path.join(ROOT, 'node_modules/pusher-js/dist/web/pusher.js');
const HELPER = path.join(ROOT, 'clients/pusher-recovery/index.js');

let broker;
let proxy;
let pages;
let pagesUrl;
let browser;

before(async () => {
  broker = await startBroker({
    config: `
[http_fallback]
session_timeout_secs = 3
heartbeat_secs = 1
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
history = { channels = ["history-"] }
`,
  });
  proxy = await startProxy(broker.port);
  const files = { '/pusher.js': fs.readFileSync(PUSHER_WEB), '/recovery.js': fs.readFileSync(HELPER) };
  pages = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (files[url.pathname]) {
      res.writeHead(200, { 'content-type': 'application/javascript' });
      return res.end(files[url.pathname]);
    }
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end(page());
    }
    res.writeHead(404).end();
  });
  const port = await freePort();
  await new Promise((r) => pages.listen(port, '127.0.0.1', r));
  pagesUrl = `http://127.0.0.1:${port}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close().catch(() => {});
  await new Promise((r) => (pages ? pages.close(r) : r()));
  await proxy?.close();
  await broker?.stop();
});

function page() {
  const options = {
    wsHost: '127.0.0.1', wsPort: proxy.port, httpHost: '127.0.0.1', httpPort: proxy.port,
    forceTLS: false, cluster: 'mt1', enabledTransports: ['xhr_streaming'],
  };
  return `<!doctype html><html><body>
<script src="/pusher.js"></script>
<script type="module">
  import { enableRecovery } from '/recovery.js';
  window.log = [];
  window.notices = [];
  const pusher = new Pusher('app-key', ${JSON.stringify(options)});
  window.pusher = pusher;
  enableRecovery(pusher);
  const channel = pusher.subscribe('history-fb');
  channel.bind('e', (d) => window.log.push(d.n));
  channel.bind('pusher:recovery', (d) => window.notices.push(d));
</script></body></html>`;
}

test('xhr_streaming: cut off for 10 s, the 100 events triggered meanwhile arrive in order, once, then live ones', async () => {
  const sdk = sdkFor(broker);
  const context = await browser.newContext();
  try {
    const pg = await context.newPage();
    await pg.goto(pagesUrl);
    await pg.waitForFunction(() => window.notices.length === 1, null, { timeout: 15000 });
    assert.equal(await pg.evaluate(() => window.pusher.connection.connection.transport.name), 'xhr_streaming');
    await sdk.trigger('history-fb', 'e', { n: 0 });
    await pg.waitForFunction(() => window.log.length === 1, null, { timeout: 10000 });
    proxy.cut();
    const cutAt = Date.now();
    for (let i = 1; i <= 100; i++) await sdk.trigger('history-fb', 'e', { n: i });
    await sleep(Math.max(0, 10000 - (Date.now() - cutAt)));
    assert.deepEqual(await pg.evaluate(() => window.log), [0], 'nothing arrived while cut off');
    proxy.restore();
    await pg.waitForFunction(() => window.notices.some((n) => n.status === 'recovered'), null, { timeout: 40000 });
    await sdk.trigger('history-fb', 'e', { n: 101 });
    await pg.waitForFunction(() => window.log.length >= 102, null, { timeout: 15000 });
    assert.deepEqual(await pg.evaluate(() => window.log), Array.from({ length: 102 }, (_, i) => i));
    const recovered = (await pg.evaluate(() => window.notices)).find((n) => n.status === 'recovered');
    assert.equal(recovered.replayed, 100);
    assert.equal(await pg.evaluate(() => window.pusher.connection.connection.transport.name), 'xhr_streaming');
  } finally {
    await context.close();
  }
});
