// pusher-js's web build in Chromium over the broker's HTTP fallback transports
// (xhr_streaming, xhr_polling), beside a WebSocket client (pusher-js's Node
// build) on the same channels; and 200 abandoned fallback sessions that must
// leave nothing behind.
//
// The page comes from its own small server (another origin than the broker),
// so pusher-js's cross-origin XHRs and their CORS preflights are exercised as
// they are in a real deployment.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { launchChromium } from './lib/browser.mjs';
import { startBroker, freePort, ROOT } from './lib/broker.mjs';
import { clientPool, sdkFor, withTimeout } from './lib/clients.mjs';

const PUSHER_WEB = path.join(ROOT, 'node_modules/pusher-js/dist/web/pusher.js');
/** Seconds an abandoned session lives (short here, so the test is quick). */
const SESSION_TIMEOUT = 2;

let broker;
let sdk;
let pages;
let pagesUrl;
let browser;
const nodeClients = clientPool();

/** Who signs in as what: the page is `fbuser`, the Node client `wsuser`. */
function presence(user) {
  return { user_id: user, user_info: { name: user } };
}

before(async () => {
  broker = await startBroker({
    config: `
[http_fallback]
session_timeout_secs = ${SESSION_TIMEOUT}
heartbeat_secs = 1
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
`,
  });
  sdk = sdkFor(broker);
  const pusherJs = fs.readFileSync(PUSHER_WEB);
  pages = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (url.pathname === '/pusher.js') {
      res.writeHead(200, { 'content-type': 'application/javascript' });
      return res.end(pusherJs);
    }
    if (url.pathname === '/auth' && req.method === 'POST') {
      let body = '';
      req.on('data', (d) => (body += d));
      return req.on('end', () => {
        const form = new URLSearchParams(body);
        const channel = form.get('channel_name');
        const auth = sdk.authorizeChannel(form.get('socket_id'), channel, channel.startsWith('presence-') ? presence('fbuser') : undefined);
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify(auth));
      });
    }
    if (url.pathname === '/') {
      res.writeHead(200, { 'content-type': 'text/html' });
      return res.end(page(url.searchParams));
    }
    res.writeHead(404).end();
  });
  const port = await freePort();
  await new Promise((r) => pages.listen(port, '127.0.0.1', r));
  pagesUrl = `http://127.0.0.1:${port}`;
  browser = await launchChromium();
});

after(async () => {
  nodeClients.closeAll();
  await browser?.close().catch(() => {});
  await new Promise((r) => (pages ? pages.close(r) : r()));
  await broker?.stop();
});

/** The page: pusher-js's web build pointed at the broker with the README's recommended options. */
function page(params) {
  const transports = params.get('transports');
  // `port`: another broker than the file's own (see the closed-page test).
  const port = Number(params.get('port')) || broker.port;
  const options = {
    wsHost: '127.0.0.1',
    wsPort: port,
    httpHost: '127.0.0.1',
    httpPort: port,
    forceTLS: false,
    cluster: 'mt1',
    channelAuthorization: { endpoint: '/auth', transport: 'ajax' },
    ...(transports ? { enabledTransports: transports.split(',') } : {}),
  };
  return `<!doctype html><html><body>
<script>${params.get('nows') ? 'delete window.WebSocket;' : ''}</script>
<script src="/pusher.js"></script>
<script>
  window.log = [];
  const pusher = new Pusher('app-key', ${JSON.stringify(options)});
  window.pusher = pusher;
  for (const name of ['public-fb', 'private-fb', 'presence-fb']) {
    pusher.subscribe(name).bind_global((event, data) => window.log.push({ channel: name, event, data }));
  }
</script></body></html>`;
}

function once(emitter, event) {
  return withTimeout(new Promise((resolve) => emitter.bind(event, resolve)), event, 10000);
}

/** Waits until the page's log has an entry matching `channel` and `event` (and `pred`). */
async function pageSaw(pg, channel, event, pred = 'true') {
  await pg.waitForFunction(
    ([c, e, p]) => window.log.some((x) => x.channel === c && x.event === e && new Function('x', `return ${p}`)(x)),
    [channel, event, pred],
    { timeout: 15000 },
  );
}

async function transportOf(pg) {
  return pg.evaluate(() => window.pusher.connection.connection?.transport?.name);
}

/** One page, subscribed to public, private and presence channels, against a WebSocket client. */
async function fallbackConversation(query, expectTransports) {
  const context = await browser.newContext();
  try {
    const pg = await context.newPage();
    await pg.goto(`${pagesUrl}/?${query}`);
    for (const c of ['public-fb', 'private-fb', 'presence-fb']) await pageSaw(pg, c, 'pusher:subscription_succeeded');
    assert.ok(expectTransports.includes(await transportOf(pg)), `transport ${await transportOf(pg)}`);
    const pageSocket = await pg.evaluate(() => window.pusher.connection.socket_id);

    // The WebSocket side: pusher-js's Node build, as `wsuser`.
    const ws = await nodeClients.open(broker, { sdk, user: presence('wsuser') });
    const chans = {};
    for (const c of ['public-fb', 'private-fb', 'presence-fb']) {
      chans[c] = ws.subscribe(c);
      await once(chans[c], 'pusher:subscription_succeeded');
    }
    await pageSaw(pg, 'presence-fb', 'pusher:member_added', "x.data.id === 'wsuser'");
    assert.deepEqual(Object.keys(chans['presence-fb'].members.members).sort(), ['fbuser', 'wsuser']);

    // Server events on every channel type.
    for (const c of Object.keys(chans)) await sdk.trigger(c, 'server-news', { c });
    for (const c of Object.keys(chans)) await pageSaw(pg, c, 'server-news', `x.data.c === '${c}'`);

    // Client events both ways, on private and presence channels.
    for (const c of ['private-fb', 'presence-fb']) {
      const got = once(chans[c], 'client-from-page');
      await pg.evaluate((name) => window.pusher.channel(name).trigger('client-from-page', { name }), c);
      assert.deepEqual(await got, { name: c });
      chans[c].trigger('client-from-ws', { c });
      await pageSaw(pg, c, 'client-from-ws', `x.data.c === '${c}'`);
    }

    // A REST trigger excluding the page's socket_id reaches the WebSocket client only.
    const excluded = once(chans['public-fb'], 'excluded');
    await sdk.trigger('public-fb', 'excluded', { n: 1 }, { socket_id: pageSocket });
    await excluded;
    await sdk.trigger('public-fb', 'after', { n: 2 });
    await pageSaw(pg, 'public-fb', 'after');
    assert.ok(!(await pg.evaluate(() => window.log.some((x) => x.event === 'excluded'))), 'the excluded socket got the event');

    // The WebSocket client leaves: the page sees member_removed.
    nodeClients.close(ws);
    await pageSaw(pg, 'presence-fb', 'pusher:member_removed', "x.data.id === 'wsuser'");
    assert.ok(expectTransports.includes(await transportOf(pg)), 'still on the fallback transport');
  } finally {
    await context.close();
  }
}

test('pusher-js with enabledTransports xhr_streaming', async () => {
  await fallbackConversation('transports=xhr_streaming', ['xhr_streaming']);
});

test('pusher-js with enabledTransports xhr_polling', async () => {
  await fallbackConversation('transports=xhr_polling', ['xhr_polling']);
});

test('pusher-js with default transports falls back when the browser has no WebSocket', async () => {
  await fallbackConversation('nows=1', ['xhr_streaming', 'xhr_polling']);
});

test('pusher-js with default transports and working WebSockets uses WebSocket', async () => {
  const context = await browser.newContext();
  try {
    const pg = await context.newPage();
    await pg.goto(`${pagesUrl}/`);
    await pageSaw(pg, 'presence-fb', 'pusher:subscription_succeeded');
    assert.equal(await transportOf(pg), 'ws');
  } finally {
    await context.close();
  }
});

/**
 * A closed page is noticed at once: its held poll or stream ends with its
 * socket, so the other members get `member_removed` the session timeout after
 * the page closed, not after the next heartbeat fails to reach it. The
 * heartbeat here is far longer than the timeout, so waiting for it shows.
 */
async function closedPageLeaves(transport) {
  const TIMEOUT = 2;
  const own = await startBroker({
    config: `
[http_fallback]
session_timeout_secs = ${TIMEOUT}
heartbeat_secs = 20
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
`,
  });
  const context = await browser.newContext();
  try {
    const pg = await context.newPage();
    await pg.goto(`${pagesUrl}/?transports=${transport}&port=${own.port}`);
    await pageSaw(pg, 'presence-fb', 'pusher:subscription_succeeded');
    assert.equal(await transportOf(pg), transport);
    const ws = await nodeClients.open(own, { sdk: sdkFor(own), user: presence('wsuser') });
    const channel = ws.subscribe('presence-fb');
    await once(channel, 'pusher:subscription_succeeded');
    assert.ok(channel.members.get('fbuser'), 'the page is a member');
    const removed = withTimeout(
      new Promise((resolve) => channel.bind('pusher:member_removed', (m) => m.id === 'fbuser' && resolve())),
      'member_removed for the closed page',
      15000,
    );
    const closedAt = Date.now();
    await pg.close();
    await removed;
    const took = (Date.now() - closedAt) / 1000;
    console.log(`${transport}: member_removed ${took.toFixed(2)} s after the page closed (session timeout ${TIMEOUT} s)`);
    assert.ok(took >= TIMEOUT - 0.5, `member_removed after ${took} s, before the session timeout`);
    assert.ok(took <= TIMEOUT + 1, `member_removed after ${took} s; expected at most the session timeout (${TIMEOUT} s) plus 1 s`);
    nodeClients.close(ws);
  } finally {
    await context.close();
    await own.stop();
  }
}

test('a closed xhr_streaming page leaves its presence channels the session timeout later', async () => {
  await closedPageLeaves('xhr_streaming');
});

test('a closed xhr_polling page leaves its presence channels the session timeout later', async () => {
  await closedPageLeaves('xhr_polling');
});

/** The broker's `connections` gauge. */
async function connectionsGauge() {
  const text = await (await fetch(`${broker.url}/metrics`)).text();
  const m = /^broker_connections (\d+)$/m.exec(text);
  assert.ok(m, `no broker_connections in /metrics:\n${text.slice(0, 500)}`);
  return Number(m[1]);
}

function rssKiB() {
  const status = fs.readFileSync(`/proc/${broker.pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)[1]);
}

test('200 abandoned fallback sessions leave no state behind after the session timeout', async () => {
  const N = 200;
  // Earlier tests' sessions must be gone first.
  for (let i = 0; (await connectionsGauge()) > 0; i++) {
    assert.ok(i < 100, 'earlier sessions did not expire');
    await new Promise((r) => setTimeout(r, 100));
  }
  const rssBefore = rssKiB();
  const base = `${broker.url}/pusher/app/app-key`;
  const post = async (url, body) => {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    return { status: res.status, text: await res.text() };
  };
  await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const session = `${base}/${i % 1000}/ab${String(i).padStart(6, '0')}`;
      const open = await post(`${session}/xhr?protocol=7&client=js&version=8.4.0`);
      assert.equal(open.text, 'o\n');
      const established = await post(`${session}/xhr?protocol=7&client=js&version=8.4.0`);
      assert.match(established.text, /^a\[.*connection_established/);
      const sub = JSON.stringify([JSON.stringify({ event: 'pusher:subscribe', data: { channel: `abandoned-${i % 20}` } })]);
      assert.equal((await post(`${session}/xhr_send`, sub)).status, 204);
    }),
  );
  assert.equal(await connectionsGauge(), N);
  const rssOpen = rssKiB();
  // Abandoned: nobody polls any more. After the timeout every session, subscription and channel is gone.
  for (let i = 0; (await connectionsGauge()) > 0; i++) {
    assert.ok(i < 200, `sessions still open ${i / 10} s after being abandoned`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const channels = await sdk.get({ path: '/channels' });
  assert.deepEqual((await channels.json()).channels, {});
  const rssAfter = rssKiB();
  console.log(`RSS: ${rssBefore} KiB before, ${rssOpen} KiB with ${N} sessions, ${rssAfter} KiB after they expired`);
  // Memory goes back near where it started (the allocator may keep some pages).
  assert.ok(rssAfter - rssBefore < 32 * 1024, `RSS grew by ${rssAfter - rssBefore} KiB`);
});
