// The built-in debug console in a real browser: log in with the admin token,
// watch a pusher-js client connect and subscribe, send an event with the event
// creator and see both the log and the client receive it. Without the token:
// 401 and no data.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { launchChromium } from './lib/browser.mjs';
import { startBroker, ROOT } from './lib/broker.mjs';
import { connect, eventually, sdkFor, subscribe, withTimeout } from './lib/clients.mjs';
import { dropKeys, hookReceiver } from './lib/servers.mjs';
import { clusterConfig } from './lib/redis.mjs';
import { startRedisCluster } from './lib/redis-cluster.mjs';

const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const TOKEN = 'console-test-token-' + Math.random().toString(36).slice(2);

let broker;
let browser;
let hooks;

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  hooks = await hookReceiver();
  broker = await startBroker({
    // The 401 test below offers more wrong tokens than the default per-minute budget
    // (broker/tests/console.rs covers that throttle).
    config: `console_token = "${TOKEN}"
[console]
failed_logins_per_minute = 100
[webhooks]
batch_wait_ms = 10
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
webhooks = [{ url = "${hooks.url}hook?secret=not-for-the-page", event_types = ["channel_occupied"] }]
[[apps]]
id = "2"
key = "app-key-2"
secret = "app-secret-2"
`,
  });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close().catch(() => {});
  await broker?.stop();
  hooks?.close();
});

/** A page logged in to the console, failing the test on any page error. */
async function openConsole() {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await context.newPage();
  const first = await page.goto(`${broker.url}/console`);
  assert.equal(first.status(), 401, 'the console asks for the token first');
  await page.fill('#token', TOKEN);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  // Chromium reports every non-2xx response as a console error; the test sends one bad event on purpose (400).
  page.on('console', (m) => m.type() === 'error' && !/status of 400/.test(m.text()) && problems.push(`console: ${m.text()}`));
  await Promise.all([page.waitForURL(`${broker.url}/console`), page.click('button[type=submit]')]);
  await page.waitForSelector('#feed-state[data-state="live"]');
  return { context, page, problems };
}

const row = (page, selector) => page.waitForSelector(`#log tr${selector}`, { timeout: 5000 });

test('the console shows a pusher-js client connect, subscribe and receive an event sent from the event creator', async () => {
  const { context, page, problems } = await openConsole();
  const sdk = sdkFor(broker);
  const client = await connect(broker, { sdk, user: { user_id: 'ada', user_info: { name: 'Ada' } } });
  try {
    const socketId = client.connection.socket_id;
    const demo = await subscribe(client, 'console-demo');
    await subscribe(client, 'presence-room');

    await row(page, `[data-kind="connection_opened"][data-socket="${socketId}"]`);
    await row(page, `[data-kind="subscribed"][data-socket="${socketId}"][data-channel="console-demo"]`);
    await row(page, `[data-kind="subscribed"][data-socket="${socketId}"][data-channel="presence-room"]`);

    // The channel list (via the adapter) and a presence channel's members.
    await page.waitForSelector('#channels tr[data-channel="console-demo"]');
    assert.equal(await page.textContent('#channels tr[data-channel="console-demo"] td:nth-child(2)'), '1');
    await page.fill('#channel-prefix', 'presence-');
    await eventually(async () => assert.equal(await page.locator('#channels tr').count(), 1), 'prefix filter');
    await page.click('#channels tr[data-channel="presence-room"]');
    await page.waitForSelector('#members li:text("ada")');

    // A refused subscription shows with its reason.
    const raw = new WebSocket(`ws://127.0.0.1:${broker.port}/app/app-key?protocol=7`, { headers: { origin: 'http://console.test' } });
    const rawId = await withTimeout(
      new Promise((resolve) => raw.on('message', (m) => {
        const f = JSON.parse(m.toString());
        if (f.event === 'pusher:connection_established') resolve(JSON.parse(f.data).socket_id);
      })),
      'raw connection',
    );
    raw.send(JSON.stringify({ event: 'pusher:subscribe', data: { channel: 'private-secret', auth: 'app-key:0000' } }));
    const failed = await row(page, `[data-kind="subscription_failed"][data-socket="${rawId}"]`);
    assert.match(await failed.textContent(), /private-secret/);
    assert.match(await failed.textContent(), /invalid signature.*\(401\)/);
    assert.match(await (await row(page, `[data-kind="connection_opened"][data-socket="${rawId}"]`)).textContent(), /http:\/\/console\.test/);

    // The event creator goes through the REST trigger path: the client gets it, the log shows it.
    await page.fill('#trigger-channels', 'console-demo');
    await page.fill('#trigger-event', 'greeting');
    await page.fill('#trigger-data', '{"hello": "from the console"}');
    await page.click('#trigger-form button[type=submit]');
    await page.waitForSelector('#trigger-result:text("Sent greeting")');
    const [got] = await demo.waitFor(1);
    assert.deepEqual(got, { event: 'greeting', data: { hello: 'from the console' } });
    const sent = await row(page, '[data-kind="rest_event"][data-event="greeting"]');
    assert.match(await sent.textContent(), /console-demo/);
    assert.match(await sent.textContent(), /29 bytes/);

    // Bad input to the creator is refused with the REST API's reason.
    await page.fill('#trigger-channels', 'no spaces allowed');
    await page.click('#trigger-form button[type=submit]');
    await page.waitForSelector('#trigger-result.error:text("400")');

    // The webhook for channel_occupied went out and is logged without its query string.
    await eventually(() => assert.ok(hooks.events.some((w) => w.channel === 'console-demo')), 'webhook received');
    const hook = await row(page, '[data-kind="webhook_sent"]');
    assert.ok(!(await hook.textContent()).includes('not-for-the-page'), 'webhook URL query strings are not shown');

    // Filters: by socket id only that socket's rows remain.
    await page.fill('#filter-socket', rawId);
    await eventually(async () => {
      const sockets = await page.$$eval('#log tr', (rows) => rows.map((r) => r.dataset.socket));
      assert.ok(sockets.length > 0 && sockets.every((s) => s === rawId), JSON.stringify(sockets));
    }, 'socket filter');
    await page.fill('#filter-socket', '');
    await page.fill('#filter-event', 'greeting');
    await eventually(async () => assert.deepEqual(await page.$$eval('#log tr', (r) => r.map((x) => x.dataset.event)), ['greeting']), 'event filter');
    await page.fill('#filter-event', '');

    // Pause: new events wait (and are counted) until resumed.
    await page.click('#pause');
    await sdk.trigger('console-demo', 'while-paused', { n: 1 });
    await demo.waitFor(2);
    await page.waitForSelector('#notices:text("1 new while paused")');
    assert.equal(await page.locator('#log tr[data-event="while-paused"]').count(), 0, 'not shown while paused');
    await page.click('#pause');
    await row(page, '[data-kind="rest_event"][data-event="while-paused"]');

    // Graphs: a line for connections, and for messages once counted.
    await eventually(async () => assert.ok((await page.locator('#conn-graph polyline').count()) > 0), 'connection graph');
    await eventually(async () => assert.ok((await page.locator('#msg-graph polyline').count()) > 0), 'messages graph');
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-live.png'), fullPage: true });

    // Disconnects show with their close code.
    raw.close(1000);
    await row(page, `[data-kind="connection_closed"][data-socket="${rawId}"]`);
    client.disconnect();
    const closed = await row(page, `[data-kind="connection_closed"][data-socket="${socketId}"]`);
    assert.match(await closed.textContent(), /close code/);
    await row(page, `[data-kind="unsubscribed"][data-socket="${socketId}"][data-channel="console-demo"]`);
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-closed.png'), fullPage: true });
    assert.deepEqual(problems, []);
  } finally {
    client.disconnect();
    await context.close();
  }
});

/** The live feed's viewer count, as the stats report it. */
async function viewerCount() {
  const res = await fetch(`${broker.url}/console/api/apps/1/stats`, { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(res.status, 200);
  return (await res.json()).viewers;
}

test('one page switching apps and reloading holds one viewer place (max_viewers = 4)', async () => {
  const { context, page, problems } = await openConsole();
  try {
    for (let i = 0; i < 6; i++) {
      for (const app of ['2', '1']) {
        await page.selectOption('#app', app);
        await page.waitForSelector('#feed-state[data-state="live"]', { timeout: 5000 });
      }
    }
    for (let i = 0; i < 6; i++) {
      await page.reload();
      await page.waitForSelector('#feed-state[data-state="live"]', { timeout: 5000 });
    }
    // Each switch reused the page's place and each reload's closed feed freed its place at once.
    await eventually(async () => assert.equal(await viewerCount(), 1), 'one viewer', 2000);
    // The page's own count, after its next once-a-second refresh.
    await new Promise((r) => setTimeout(r, 1500));
    assert.doesNotMatch(await page.textContent('#graph-span'), /consoles open/);
    // Closing the page frees its place too.
    await page.close();
    await eventually(async () => assert.equal(await viewerCount(), 0), 'no viewer after the page closed', 2000);
    assert.deepEqual(problems, []);
  } finally {
    await context.close();
  }
});

test('the login cookie is a session id, not the token, and logging out ends it on the broker', async () => {
  const { context, page, problems } = await openConsole();
  try {
    const [cookie] = (await context.cookies()).filter((c) => c.name === 'broker_console');
    assert.ok(cookie, 'a login cookie');
    assert.notEqual(cookie.value, TOKEN);
    assert.ok(!cookie.value.includes(TOKEN));
    assert.ok(cookie.httpOnly && cookie.sameSite === 'Strict', JSON.stringify(cookie));
    const withCookie = () => fetch(`${broker.url}/console/api/apps`, { headers: { cookie: `broker_console=${cookie.value}` } });
    assert.equal((await withCookie()).status, 200);
    // (The login form that follows the logout is a 401, which Chromium logs as an error.)
    assert.deepEqual(problems, []);
    await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('header form button[type=submit]')]);
    assert.equal(await page.locator('#token').count(), 1, 'back at the login form');
    assert.equal((await withCookie()).status, 401, 'a copy of the cookie is refused after logout');
  } finally {
    await context.close();
  }
});

test('without the token: 401 and no data, in the browser and on every data route', async () => {
  // Some data to leak, if anything leaked.
  const client = await connect(broker);
  await subscribe(client, 'leak-canary');
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    const res = await page.goto(`${broker.url}/console`);
    assert.equal(res.status(), 401);
    assert.equal(await page.locator('#token').count(), 1, 'a form asks for the token');
    await page.fill('#token', 'wrong-token-0123456789');
    // The form posts and the answer is the page itself: wait for that navigation to finish.
    const [wrong] = await Promise.all([page.waitForNavigation({ waitUntil: 'load' }), page.click('button[type=submit]')]);
    assert.equal(wrong.status(), 401);
    assert.equal(new URL(page.url()).pathname, '/console/login');
    await page.screenshot({ path: path.join(ARTIFACTS, 'console-login.png') });
    await context.close();

    const routes = ['/console/api/apps', '/console/api/apps/1/stats', '/console/api/apps/1/channels', '/console/api/apps/1/channels/presence-room/members', '/console/api/apps/1/feed'];
    const attempts = [{}, { authorization: `Bearer ${TOKEN}x` }, { authorization: 'Bearer ' }, { cookie: `broker_console=${TOKEN.slice(0, -1)}` }];
    for (const route of [...routes, '/console']) {
      for (const headers of attempts) {
        const r = await fetch(broker.url + route, { headers, signal: AbortSignal.timeout(5000) });
        const body = await r.text();
        assert.equal(r.status, 401, `${route} with ${JSON.stringify(headers)}`);
        for (const secret of ['leak-canary', 'app-key', 'app-secret', TOKEN]) assert.ok(!body.includes(secret), `${route} leaks ${secret}`);
      }
    }
    const post = await fetch(`${broker.url}/console/api/apps/1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'x', channels: ['leak-canary'], data: '{}' }),
    });
    assert.equal(post.status, 401, 'the event creator needs the token too');

    // With the token as a bearer header, scripts can use the same routes.
    const ok = await fetch(`${broker.url}/console/api/apps/1/channels?prefix=leak-`, { headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(ok.status, 200);
    assert.deepEqual((await ok.json()).channels.map((c) => c.name), ['leak-canary']);
    // The event creator takes JSON only (a cross-site form cannot send it without CORS).
    const form = await fetch(`${broker.url}/console/api/apps/1/events`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/x-www-form-urlencoded' },
      body: 'name=x&channels=leak-canary&data=1',
    });
    assert.equal(form.status, 415);
  } finally {
    client.disconnect();
  }
});

test('the console is off (404) when no token is configured', async () => {
  const plain = await startBroker();
  try {
    for (const route of ['/console', '/console/api/apps']) {
      assert.equal((await fetch(plain.url + route)).status, 404, route);
    }
  } finally {
    await plain.stop();
  }
});

/** Reads a console's live feed (server-sent events) with a bearer token, collecting the parsed events. */
async function readFeed(node, token) {
  const controller = new AbortController();
  const res = await fetch(`${node.url}/console/api/apps/1/feed`, { headers: { authorization: `Bearer ${token}` }, signal: controller.signal });
  assert.equal(res.status, 200);
  const events = [];
  (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk, { stream: true });
        let end;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split('\n').find((l) => l.startsWith('data: '));
          if (data && !block.startsWith('event:')) events.push(JSON.parse(data.slice(6)));
        }
      }
    } catch {}
  })();
  return { events, close: () => controller.abort() };
}

/** A console on node A of two shows node B's events, marked with its node; `redisUrl` is their Redis. */
async function consoleAcrossNodes(redisUrl) {
  const prefix = `console-test-${process.pid}-${crypto.randomBytes(3).toString('hex')}`;
  const config = `console_token = "${TOKEN}"\n${clusterConfig(redisUrl, prefix)}`;
  const [a, b] = await Promise.all([startBroker({ config }), startBroker({ config })]);
  const feed = await readFeed(a, TOKEN);
  let client;
  try {
    for (const n of [a, b]) await eventually(async () => assert.equal((await fetch(`${n.url}/ready`)).status, 200), 'node ready');
    // Node B starts relaying within about a second of the console opening on A.
    await eventually(async () => {
      const c = await connect(b);
      try {
        await subscribe(c, 'cluster-console');
        const socketId = c.connection.socket_id;
        await eventually(
          () => assert.ok(feed.events.some((e) => e.kind === 'subscribed' && e.socket_id === socketId), JSON.stringify(feed.events)),
          'relayed subscription',
          2000,
        );
        client = c;
      } catch (e) {
        c.disconnect();
        throw e;
      }
    }, 'node B relays to the console on A', 10000);
    const socketId = client.connection.socket_id;
    const opened = feed.events.find((e) => e.kind === 'connection_opened' && e.socket_id === socketId);
    assert.ok(opened?.node, 'events from node B carry its node id');
    // A's channel list is cluster-wide: B's subscriber counts.
    const list = await (await fetch(`${a.url}/console/api/apps/1/channels?prefix=cluster-`, { headers: { authorization: `Bearer ${TOKEN}` } })).json();
    assert.deepEqual(list.channels, [{ name: 'cluster-console', subscriptions: 1, users: null }]);
    // A's own events are not marked.
    await sdkFor(a).trigger('cluster-console', 'from-a', {});
    await eventually(() => assert.ok(feed.events.some((e) => e.kind === 'rest_event' && e.event === 'from-a' && !e.node)), 'local event');
  } finally {
    client?.disconnect();
    feed.close();
    await Promise.all([a.stop(), b.stop()]);
    if (!redisUrl.startsWith('redis+cluster:')) dropKeys(redisUrl, prefix);
  }
}

test('in a cluster, a console on one node shows the events of another, marked with its node', async () => {
  await consoleAcrossNodes(process.env.TEST_REDIS_URL || 'redis://127.0.0.1:6379');
});

test('the same on a Redis Cluster (the relay uses sharded pub/sub)', async (t) => {
  const cluster = await startRedisCluster({ replicas: 0 });
  t.after(() => cluster.stop());
  await consoleAcrossNodes(cluster.url);
});
