// The chat in a real browser: a real broker, the chat-app binary on a fresh
// PostgreSQL database, and two users in separate Chromium contexts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { launchChromium } from './lib/browser.mjs';
import { startBroker, freePort, waitForHttp, ROOT, BROKER_BIN } from './lib/broker.mjs';
import { startProxy } from './lib/proxy.mjs';

const CHAT_BIN = process.env.CHAT_BIN || path.join(ROOT, 'target/debug/chat-app');
const ADMIN_URL = process.env.CHAT_TEST_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const PASSWORD = 'e2e-password-1';
const XSS = '<img src=x onerror=alert(1)>';
// The broker the chat runs with keeps history for the chat's channels (as scripts/start and docker-compose.yml do).
const CHAT_BROKER_ENV = { BROKER_APP_HISTORY_CHANNELS: 'private-a_channel,private-conversation-' };

let browser;
/** Every stack started, stopped after all tests. */
const stacks = [];
// The stack the test now running uses (the helpers below read it).
let broker;
let baseUrl;
let chatLogs = () => '';

function psql(sql) {
  const r = spawnSync('psql', [ADMIN_URL, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr || r.error}`);
}

/**
 * A broker, a fresh database with `users` (created with the command line),
 * and the chat-app binary on it. Each test gets its own, so that who exists
 * (and so who receives what) is exactly what the test says. With `proxy`, the
 * pages reach the broker through a TCP proxy the test controls (the chat-app's
 * own REST calls go straight to the broker).
 */
async function startStack(users, { proxy = false } = {}) {
  const dbName = `chat_e2e_${process.pid}_${crypto.randomBytes(4).toString('hex')}`;
  psql(`CREATE DATABASE "${dbName}"`);
  const stack = { dbName, logs: '' };
  stacks.push(stack);
  stack.broker = await startBroker({ env: CHAT_BROKER_ENV });
  const base = ADMIN_URL.slice(0, ADMIN_URL.lastIndexOf('/'));
  const env = { ...process.env, DATABASE_URL: `${base}/${dbName}`, PUSHER_URL: stack.broker.url, RUST_LOG: process.env.RUST_LOG || 'warn' };
  if (proxy) {
    stack.proxy = await startProxy(stack.broker.port);
    env.PUSHER_WS_PORT = String(stack.proxy.port);
  }
  for (const name of users) {
    const r = spawnSync(CHAT_BIN, ['create-user', name], { input: `${PASSWORD}\n`, env, encoding: 'utf8' });
    assert.equal(r.status, 0, `create-user ${name}: ${r.stderr}`);
  }
  const port = await freePort();
  stack.baseUrl = `http://127.0.0.1:${port}`;
  stack.chat = spawn(CHAT_BIN, [], {
    env: { ...env, CHAT_HOST: '127.0.0.1', CHAT_PORT: String(port), SESSION_KEY: crypto.randomBytes(48).toString('hex') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  stack.chat.stdout.on('data', (d) => (stack.logs += d));
  stack.chat.stderr.on('data', (d) => (stack.logs += d));
  await waitForHttp(`${stack.baseUrl}/health`, { child: stack.chat });
  broker = stack.broker;
  baseUrl = stack.baseUrl;
  chatLogs = () => stack.logs;
  return stack;
}

async function stopStack(stack) {
  if (stack.chat && stack.chat.exitCode === null) {
    const exited = new Promise((r) => stack.chat.once('exit', r));
    stack.chat.kill('SIGTERM');
    await exited;
  }
  await stack.proxy?.close();
  await stack.broker?.stop();
  psql(`DROP DATABASE IF EXISTS "${stack.dbName}" WITH (FORCE)`);
}

before(async () => {
  assert.ok(fs.existsSync(CHAT_BIN), `${CHAT_BIN} is missing: run cargo build --workspace`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  browser = await launchChromium();
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const stack of stacks) await stopStack(stack);
});

/** A logged-in user in a browser context of their own. */
async function openChat(name, viewport) {
  const context = await browser.newContext({ viewport });
  // Every status a message shows on this page, in order, so that a Delivered
  // that lasted only milliseconds before Seen still counts as seen by the user.
  await context.addInitScript(() => {
    window.__statusLog = [];
    new MutationObserver((mutations) => {
      for (const m of mutations) {
        const nodes = m.type === 'attributes' ? [m.target] : [...m.addedNodes];
        for (const n of nodes) {
          if (n.nodeType === 1 && n.matches('li.msg.mine')) window.__statusLog.push([n.dataset.id, n.dataset.status]);
        }
      }
    }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-status'] });
  });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => m.type() === 'error' && problems.push(`console: ${m.text()} (${m.location().url})`));
  page.on('dialog', (d) => {
    problems.push(`dialog: ${d.message()}`);
    d.dismiss();
  });
  await page.goto(`${baseUrl}/`);
  assert.equal(new URL(page.url()).pathname, '/login', 'anonymous visitors land on the login page');
  await page.fill('#username', name);
  await page.fill('#password', PASSWORD);
  await Promise.all([page.waitForURL(`${baseUrl}/`), page.click('button[type=submit]')]);
  await page.waitForSelector('#connection[data-state="connected"]');
  // A marker that a reload would wipe: status changes must arrive live.
  await page.evaluate(() => (window.__noReload = true));
  return { context, page, problems, name };
}

/**
 * A page that is not logged in but has pusher-js and the app key (both public):
 * it tries the chat's channels and records everything it is sent.
 */
async function openSpy(channels = ['private-a_channel', 'presence-chat', 'private-typing', 'a_channel']) {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.goto(`${baseUrl}/login`);
  await page.addScriptTag({ url: '/static/vendor/pusher.min.js' });
  const wsPort = Number(new URL(broker.url).port);
  await page.evaluate(
    ({ wsPort, channels }) =>
      new Promise((resolve) => {
        window.__spy = { received: [], errors: {}, subscribed: [] };
        const key = document.querySelector('meta[name="pusher-key"]')?.content || 'app-key';
        const p = new Pusher(key, {
          wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], cluster: 'mt1',
          channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax' },
        });
        p.bind_global((event, data) => window.__spy.received.push([event, data]));
        let pending = channels.length;
        for (const name of channels) {
          const ch = p.subscribe(name);
          ch.bind('pusher:subscription_succeeded', () => { window.__spy.subscribed.push(name); if (--pending === 0) resolve(); });
          ch.bind('pusher:subscription_error', (e) => { window.__spy.errors[name] = e.status; if (--pending === 0) resolve(); });
        }
      }),
    { wsPort, channels },
  );
  return { context, page };
}

async function shot(page, file) {
  await page.screenshot({ path: path.join(ARTIFACTS, file), fullPage: true });
}

const myMessage = (page, text) => page.locator('#messages li.mine').filter({ hasText: text });
const theirMessage = (page, text) => page.locator('#messages li.theirs').filter({ hasText: text });

async function statusesOf(page, text) {
  const id = await myMessage(page, text).getAttribute('data-id');
  const log = await page.evaluate(() => window.__statusLog);
  return log.filter(([i]) => i === id).map(([, s]) => s);
}

test('two users chat live with receipts, presence, typing and escaped text', { timeout: 150_000 }, async () => {
  await startStack(['alice', 'bob']);
  const spy = await openSpy();
  const spyState = await spy.page.evaluate(() => window.__spy);
  // Only the public channel (which the chat no longer uses) can be joined anonymously.
  assert.deepEqual(spyState.subscribed, ['a_channel']);
  assert.deepEqual(spyState.errors, { 'private-a_channel': 401, 'presence-chat': 401, 'private-typing': 401 });
  const a = await openChat('alice', { width: 1100, height: 760 });
  const b = await openChat('bob', { width: 390, height: 780 }); // a phone-sized screen
  try {
    // Who is online, from the presence channel.
    for (const u of [a, b]) {
      await u.page.waitForFunction(() => document.querySelectorAll('#online-list li').length === 2);
      const names = await u.page.locator('#online-list li').allTextContents();
      assert.deepEqual(names, ['alice', 'bob']);
      assert.equal(await u.page.locator('#online-list li.me').textContent(), u.name);
    }

    // Typing indicator over client events on the private channel.
    await b.page.locator('#message').pressSequentially('typing…', { delay: 40 });
    await a.page.waitForFunction(() => document.getElementById('typing').textContent === 'bob is typing…');
    await shot(a.page, 'chat-e2e-typing.png');
    await b.page.fill('#message', '');
    await a.page.waitForFunction(() => document.getElementById('typing').textContent === '', null, { timeout: 6000 });

    // A sends; B sees it live; A sees Delivered and then Seen without reloading.
    await a.page.fill('#message', 'hello bob');
    await a.page.press('#message', 'Enter');
    await theirMessage(b.page, 'hello bob').waitFor();
    await a.page.waitForSelector('#messages li.mine[data-status="Seen"]');
    assert.deepEqual(await statusesOf(a.page, 'hello bob'), ['Sent', 'Delivered', 'Seen']);
    assert.equal(await myMessage(a.page, 'hello bob').locator('.ticks').textContent(), '✓✓');
    // The anonymous page heard nothing of it.
    const heard = await spy.page.evaluate(() => window.__spy.received.filter(([e]) => !e.startsWith('pusher')));
    assert.deepEqual(heard, [], 'an anonymous page with the app key receives none of the chat');
    await spy.context.close();

    // An HTML-injection attempt is shown as text on both sides and never runs.
    await a.page.fill('#message', XSS);
    await a.page.click('#send');
    const injected = theirMessage(b.page, 'onerror');
    await injected.waitFor();
    assert.equal(await injected.locator('.text').textContent(), XSS);
    assert.equal(await myMessage(a.page, 'onerror').locator('.text').textContent(), XSS);
    for (const u of [a, b]) assert.equal(await u.page.locator('#messages img').count(), 0);
    await a.page.waitForSelector('#messages li.mine[data-status="Seen"] >> text=onerror');

    // B answers; the receipts work the other way round too.
    await b.page.fill('#message', 'hi alice');
    await b.page.press('#message', 'Enter');
    await theirMessage(a.page, 'hi alice').waitFor();
    await myMessage(b.page, 'hi alice').and(b.page.locator('[data-status="Seen"]')).waitFor();

    await shot(a.page, 'chat-e2e-alice.png');
    await shot(b.page, 'chat-e2e-bob-phone.png');

    // Too long a message is refused with a clear error and not sent.
    await a.page.evaluate(() => {
      const t = document.getElementById('message');
      t.removeAttribute('maxlength');
      t.value = 'x'.repeat(226);
    });
    await a.page.click('#send');
    await a.page.waitForSelector('#notice[data-kind="error"]');
    assert.match(await a.page.locator('#notice').textContent(), /at most 225 characters/);

    // B leaves; A's message waits as Sent; when B comes back it is delivered and seen.
    await b.context.close();
    await a.page.waitForFunction(() => document.querySelectorAll('#online-list li').length === 1);
    await a.page.fill('#message', 'while you were away');
    await a.page.press('#message', 'Enter');
    await myMessage(a.page, 'while you were away').waitFor();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(await myMessage(a.page, 'while you were away').getAttribute('data-status'), 'Sent');
    const b2 = await openChat('bob', { width: 390, height: 780 });
    await theirMessage(b2.page, 'while you were away').waitFor();
    await myMessage(a.page, 'while you were away').and(a.page.locator('[data-status="Seen"]')).waitFor();
    assert.deepEqual(await statusesOf(a.page, 'while you were away'), ['Sent', 'Delivered', 'Seen']);

    for (const u of [a, b2]) {
      assert.equal(await u.page.evaluate(() => window.__noReload), true, `${u.name}'s page never reloaded`);
    }
    assert.deepEqual([...a.problems, ...b.problems, ...b2.problems], [], 'no script errors, CSP violations or dialogs');

    // The broker goes away: a message is still stored, the sender is told it was
    // not broadcast, and after the broker returns the other page catches up by itself.
    await broker.stop();
    await a.page.waitForFunction(() => document.getElementById('connection').dataset.state !== 'connected');
    await a.page.fill('#message', 'sent during the outage');
    await a.page.press('#message', 'Enter');
    await a.page.waitForSelector('#notice[data-kind="warning"]');
    assert.match(await a.page.locator('#notice').textContent(), /live delivery is down/);
    await myMessage(a.page, 'sent during the outage').waitFor();

    const child = spawn(BROKER_BIN, [], {
      env: { ...process.env, ...CHAT_BROKER_ENV, BROKER_HOST: '127.0.0.1', BROKER_PORT: String(broker.port), RUST_LOG: 'warn' },
      stdio: 'ignore',
    });
    try {
      await waitForHttp(`${broker.url}/health`, { child });
      await theirMessage(b2.page, 'sent during the outage').waitFor({ timeout: 60_000 });
      await myMessage(a.page, 'sent during the outage').and(a.page.locator('[data-status="Seen"]')).waitFor({ timeout: 30_000 });
      await shot(b2.page, 'chat-e2e-bob-after-outage.png');
    } finally {
      child.kill('SIGTERM');
    }
  } catch (e) {
    for (const u of [a, b]) await shot(u.page, `chat-e2e-failure-${u.name}.png`).catch(() => {});
    e.message += `\n--- chat-app output ---\n${chatLogs().slice(-4000)}`;
    throw e;
  } finally {
    await a.context.close().catch(() => {});
  }
});

/** The receipt words on my message `text` (what a sender reads, not a colour). */
const receiptLabel = (page, text) => myMessage(page, text).locator('.status-label');

async function waitForLabel(page, text, label) {
  await page.waitForFunction(
    ([t, l]) => [...document.querySelectorAll('#messages li.mine')].some((li) => li.textContent.includes(t) && li.querySelector('.status-label').textContent === l),
    [text, label],
  );
}

/** Opens a conversation from the sidebar by its title (on a phone, through the Chats button). */
async function openFromSidebar(page, title) {
  if (await page.locator('#sidebar-toggle').isVisible()) await page.click('#sidebar-toggle');
  await page.locator('#conversation-list li button').filter({ has: page.locator('.conv-title', { hasText: title }) }).click();
  await page.waitForFunction((t) => document.getElementById('conversation-title').textContent === t, title);
}

const unreadOf = (page, title) =>
  page.evaluate((t) => {
    for (const li of document.querySelectorAll('#conversation-list li')) {
      if (li.querySelector('.conv-title').textContent === t) return li.querySelector('.unread')?.textContent ?? '';
    }
    return null;
  }, title);

async function waitForUnread(page, title, expected) {
  await page.waitForFunction(
    ([t, e]) => [...document.querySelectorAll('#conversation-list li')].some((li) => li.querySelector('.conv-title').textContent === t && (li.querySelector('.unread')?.textContent ?? '') === e),
    [title, expected],
  );
}

async function send(page, text) {
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
  await myMessage(page, text).waitFor();
}

test('three users: direct and group conversations, receipts per recipient, unread notices, removal', { timeout: 240_000 }, async () => {
  await startStack(['alice', 'bob', 'carol']);
  const a = await openChat('alice', { width: 1100, height: 760 });
  const b = await openChat('bob', { width: 390, height: 780 }); // a phone
  let c = await openChat('carol', { width: 1000, height: 720 });
  const users = [a, b, c];
  try {
    // A direct conversation, started from the user search.
    await a.page.fill('#direct-user', 'bob');
    await a.page.click('#new-direct button[type=submit]');
    await a.page.waitForFunction(() => document.getElementById('conversation-title').textContent === 'bob');
    // Bob hears of it through his own notices, without reloading.
    await b.page.waitForFunction(() => [...document.querySelectorAll('#conversation-list .conv-title')].some((e) => e.textContent === 'alice'));

    // A message to bob while he has another conversation open: his unread count
    // moves (sendToUser, no subscription to the conversation), and because it
    // reached his device, alice sees Delivered, live.
    await send(a.page, 'hi bob, direct');
    await waitForUnread(b.page, 'alice', '1');
    await waitForLabel(a.page, 'hi bob, direct', 'Delivered');
    await shot(b.page, 'chat-e2e-3users-bob-phone-unread.png');
    await openFromSidebar(b.page, 'alice');
    await theirMessage(b.page, 'hi bob, direct').waitFor();
    await waitForLabel(a.page, 'hi bob, direct', 'Seen');
    assert.deepEqual(await statusesOf(a.page, 'hi bob, direct'), ['Sent', 'Delivered', 'Seen']);
    assert.equal(await unreadOf(b.page, 'alice'), '', 'opened and seen: no longer unread');

    // A group of three.
    await a.page.click('.side-form summary');
    await a.page.fill('#group-title', 'Trip');
    await a.page.fill('#group-members', 'bob, carol');
    await a.page.click('#new-group button[type=submit]');
    await a.page.waitForFunction(() => document.getElementById('conversation-title').textContent === 'Trip');
    for (const u of [b, c]) await u.page.waitForFunction(() => [...document.querySelectorAll('#conversation-list .conv-title')].some((e) => e.textContent === 'Trip'));
    const channel = await a.page.evaluate(() => `private-conversation-${window.location.hash.slice(2)}-0`);

    // Nobody without a login can subscribe to it, even knowing its name and the app key.
    const spy = await openSpy([channel]);
    assert.deepEqual(await spy.page.evaluate(() => window.__spy), { received: [], errors: { [channel]: 401 }, subscribed: [] });
    await spy.context.close();

    // Receipts per recipient: bob has the direct conversation open, carol the default one.
    await send(a.page, 'group hello');
    await waitForUnread(c.page, 'Trip', '1');
    await waitForUnread(b.page, 'Trip', '1');
    await waitForLabel(a.page, 'group hello', 'Delivered to all 2');
    await openFromSidebar(c.page, 'Trip');
    await waitForLabel(a.page, 'group hello', 'Delivered to all 2 · Seen by 1');
    // The names, on tap.
    await receiptLabel(a.page, 'group hello').click();
    await a.page.waitForFunction(() => /Seen by carol · Delivered to bob/.test(document.querySelector('#messages li.mine .receipt-names')?.textContent || ''));
    await openFromSidebar(b.page, 'Trip');
    await waitForLabel(a.page, 'group hello', 'Delivered to all 2 · Seen by all');
    await shot(a.page, 'chat-e2e-3users-alice-group.png');

    // Carol goes offline; three messages wait for her. She comes back on another
    // conversation: her list shows the last one's preview and the unread count,
    // so that one has reached her device and alice sees it Delivered, live; the
    // other two are marked Delivered in one request when she opens the group.
    await c.context.close();
    for (const n of [1, 2, 3]) await send(a.page, `while carol was away ${n}`);
    await waitForLabel(a.page, 'while carol was away 3', 'Delivered to 1 of 2 · Seen by 1');
    assert.equal(await receiptLabel(a.page, 'while carol was away 1').textContent(), 'Delivered to 1 of 2 · Seen by 1');
    c = await openChat('carol', { width: 1000, height: 720 });
    users[2] = c;
    assert.notEqual(await c.page.locator('#conversation-title').textContent(), 'Trip');
    assert.equal(await unreadOf(c.page, 'Trip'), '3', 'unread counted while away');
    const tripPreview = c.page.locator('#conversation-list li').filter({ has: c.page.locator('.conv-title', { hasText: 'Trip' }) }).locator('.conv-last');
    assert.equal(await tripPreview.textContent(), 'alice: while carol was away 3');
    await waitForLabel(a.page, 'while carol was away 3', 'Delivered to all 2 · Seen by 1');
    for (const n of [1, 2]) assert.equal(await receiptLabel(a.page, `while carol was away ${n}`).textContent(), 'Delivered to 1 of 2 · Seen by 1');
    const receipts = [];
    c.page.on('request', (r) => r.url().endsWith('/receipts') && r.method() === 'POST' && receipts.push(JSON.parse(r.postData())));
    await openFromSidebar(c.page, 'Trip');
    for (const n of [1, 2, 3]) await waitForLabel(a.page, `while carol was away ${n}`, 'Delivered to all 2 · Seen by all');
    const delivered = receipts.filter((r) => r.status === 'Delivered');
    assert.equal(delivered.length, 1, `one batched Delivered request: ${JSON.stringify(receipts)}`);
    assert.equal(delivered[0].ids.length, 2);

    // Carol keeps a second connection of her own that ignores every notice (as a
    // hostile page would), subscribed to the group while she is a member.
    const wsPort = Number(new URL(broker.url).port);
    await c.page.evaluate(
      ({ wsPort, channel, csrf }) =>
        new Promise((resolve, reject) => {
          window.__raw = [];
          const p = new Pusher(document.querySelector('meta[name="pusher-key"]').content, {
            wsHost: '127.0.0.1', wsPort, forceTLS: false, enabledTransports: ['ws'], cluster: 'mt1',
            channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax', headers: { 'X-CSRF-Token': csrf } },
          });
          const ch = p.subscribe(channel);
          ch.bind_global((event, data) => window.__raw.push([event, data && data.message]));
          ch.bind('pusher:subscription_succeeded', resolve);
          ch.bind('pusher:subscription_error', (e) => {
            window.__rawRefused = e.status;
            reject(new Error(`subscription_error ${e.status}`));
          });
        }),
      { wsPort, channel, csrf: await c.page.locator('meta[name="csrf-token"]').getAttribute('content') },
    );
    await send(a.page, 'before removal');
    await theirMessage(c.page, 'before removal').waitFor();
    await c.page.waitForFunction(() => window.__raw.some(([e, m]) => e === 'an_event' && m === 'before removal'));

    // Alice removes carol. Carol's page is told at once; the group moves to a new
    // channel, so even the connection that ignores notices hears nothing more.
    await a.page.click('#members-box summary');
    await a.page.locator('#member-list li').filter({ hasText: 'carol' }).locator('.remove-member').click();
    await c.page.waitForSelector('#notice[data-kind="warning"]');
    assert.match(await c.page.locator('#notice').textContent(), /removed from this conversation/);
    await a.page.waitForFunction(() => document.querySelectorAll('#member-list li').length === 2);
    await send(a.page, 'after carol left');
    await theirMessage(b.page, 'after carol left').waitFor();
    await waitForLabel(a.page, 'after carol left', 'Seen');
    await shot(c.page, 'chat-e2e-3users-carol-removed.png');
    const raw = await c.page.evaluate(() => window.__raw.map(([, m]) => m));
    assert.ok(!raw.includes('after carol left'), `a removed member's old subscription stays quiet: ${JSON.stringify(raw)}`);
    assert.equal(await c.page.locator('#messages', { hasText: 'after carol left' }).count(), 0);
    assert.ok(!(await c.page.locator('#conversation-list .conv-title').allTextContents()).includes('Trip'));

    // On the phone: who I am is visible; the message box grows with the text and
    // counts characters when the limit is near; words tell Delivered from Seen.
    assert.ok(await b.page.locator('#me-name').isVisible(), 'signed-in name shown on a phone');
    assert.equal(await b.page.locator('#counter').isVisible(), false, 'no counter far from the limit');
    const oneLine = await b.page.locator('#message').evaluate((e) => e.getBoundingClientRect().height);
    await b.page.fill('#message', 'first line\nsecond line\nthird line, a little longer than the others');
    const grown = await b.page.locator('#message').evaluate((e) => [e.getBoundingClientRect().height, e.scrollHeight, e.clientHeight]);
    assert.ok(grown[0] > oneLine * 2, `the box grew: ${oneLine} -> ${grown[0]}`);
    assert.ok(grown[1] <= grown[2] + 2, `no text is clipped inside it: ${grown}`);
    assert.equal(await b.page.locator('#counter').isVisible(), false);
    await b.page.fill('#message', 'word '.repeat(38));
    assert.ok(await b.page.locator('#counter').isVisible(), 'counter shown near the limit');
    assert.equal(await b.page.locator('#counter').textContent(), '189/225', 'trimmed length');
    await b.page.fill('#message', '');
    await shot(b.page, 'chat-e2e-3users-bob-phone.png');
    await b.page.click('#sidebar-toggle');
    await shot(b.page, 'chat-e2e-3users-bob-phone-sidebar.png');
    await b.page.click('#sidebar-toggle');

    // While my own connection is down, the online list does not claim anyone is online.
    await a.page.waitForFunction(() => document.querySelectorAll('#online-list li').length === 3);
    await broker.stop();
    await a.page.waitForFunction(() => document.getElementById('connection').dataset.state !== 'connected');
    assert.equal(await a.page.locator('#online-list li').count(), 0);
    assert.ok(await a.page.locator('#online-stale').isVisible());
    const child = spawn(BROKER_BIN, [], {
      env: { ...process.env, ...CHAT_BROKER_ENV, BROKER_HOST: '127.0.0.1', BROKER_PORT: String(broker.port), RUST_LOG: 'warn' },
      stdio: 'ignore',
    });
    try {
      await waitForHttp(`${broker.url}/health`, { child });
      await a.page.waitForFunction(() => document.querySelectorAll('#online-list li').length === 3, null, { timeout: 60_000 });
      assert.equal(await a.page.locator('#online-stale').isVisible(), false);
      // Carol's hostile connection reconnects too, and may not rejoin the group.
      await c.page.waitForFunction(() => window.__rawRefused === 403, null, { timeout: 60_000 });
    } finally {
      child.kill('SIGTERM');
    }

    await shot(a.page, 'chat-e2e-3users-alice-desktop.png');
    for (const u of users) assert.equal(await u.page.evaluate(() => window.__noReload), true, `${u.name}'s page never reloaded`);
    // The browser logs the socket attempts made while the broker was down; nothing else is allowed.
    // Carol's hostile connection tried to resubscribe to the group after the
    // broker came back, and /pusher/auth refused it: that 403 is expected too.
    const refused = (u, p) => u === c && /status of 403 .*\/pusher\/auth/.test(p);
    assert.ok(c.problems.some((p) => refused(c, p)), `the removed member's resubscription was refused: ${c.problems}`);
    const problems = users.flatMap((u) => u.problems.filter((p) => !/WebSocket connection to .* failed/.test(p) && !refused(u, p)));
    assert.deepEqual(problems, [], 'no script errors, CSP violations or dialogs');
  } catch (e) {
    for (const u of users) await shot(u.page, `chat-e2e-3users-failure-${u.name}.png`).catch(() => {});
    e.message += `\n--- chat-app output ---\n${chatLogs().slice(-4000)}`;
    throw e;
  } finally {
    for (const u of users) await u.context.close().catch(() => {});
  }
});

test('scroll-back reaches every older message whatever the order live and history messages arrive in', { timeout: 180_000 }, async () => {
  const stack = await startStack(['alice', 'bob']);
  // 120 messages from alice in the default conversation before anyone opens it.
  const base = ADMIN_URL.slice(0, ADMIN_URL.lastIndexOf('/'));
  const r = spawnSync('psql', [`${base}/${stack.dbName}`, '-v', 'ON_ERROR_STOP=1', '-qAtc',
    `INSERT INTO messages (sender_id, conversation_id, message)
     SELECT u.id, 1, 'old ' || g FROM users u, generate_series(1, 120) g WHERE u.username = 'alice' ORDER BY g`], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const expected = [...Array.from({ length: 120 }, (_, i) => `old ${i + 1}`), 'sent before bob subscribed', 'live 1', 'live 2', 'live 3'];

  const a = await openChat('alice', { width: 1100, height: 760 });
  const b = await openChat('bob', { width: 1000, height: 720 });
  try {
    // Bob reloads on a slow network: his first history page is answered at once
    // but reaches the page late, and his subscription to the conversation waits
    // too. Alice posts in between, so one message is in neither the held page
    // nor the live stream, and three arrive live before the page does.
    let served, authAsked, releaseAuth, releaseHistory;
    const historyServed = new Promise((r) => (served = r));
    const authWaiting = new Promise((r) => (authAsked = r));
    const authReleased = new Promise((r) => (releaseAuth = r));
    const historyReleased = new Promise((r) => (releaseHistory = r));
    let heldHistory = false;
    let heldAuth = false;
    // A new page of bob's (his old one closed first, so that none of its requests is caught here).
    await b.page.close();
    await b.context.route(/\/api\/conversations\/\d+\/messages\?limit=/, async (route) => {
      if (heldHistory) return route.continue();
      heldHistory = true;
      const response = await route.fetch();
      served();
      await historyReleased;
      await route.fulfill({ response });
    });
    await b.context.route('**/pusher/auth', async (route) => {
      if (!heldAuth && (route.request().postData() || '').includes('private-a_channel')) {
        heldAuth = true;
        authAsked();
        await authReleased;
      }
      await route.continue();
    });
    b.page = await b.context.newPage();
    b.page.on('pageerror', (e) => b.problems.push(`pageerror: ${e.message}`));
    b.page.on('console', (m) => m.type() === 'error' && b.problems.push(`console: ${m.text()}`));
    await b.page.goto(`${baseUrl}/`);
    await Promise.all([historyServed, authWaiting]);
    await send(a.page, 'sent before bob subscribed');
    releaseAuth();
    for (const text of ['live 1', 'live 2', 'live 3']) await send(a.page, text);
    await theirMessage(b.page, 'live 3').waitFor();
    assert.equal(await theirMessage(b.page, 'old 120').count(), 0, 'the first page is still held');
    releaseHistory();
    await theirMessage(b.page, 'old 120').waitFor();
    await theirMessage(b.page, 'sent before bob subscribed').waitFor();

    // Scrolling up reaches the very first message.
    const deadline = Date.now() + 60_000;
    while ((await b.page.locator('#messages li .text', { hasText: /^old 1$/ }).count()) === 0) {
      assert.ok(Date.now() < deadline, `scroll-back stopped at ${await b.page.locator('#messages li .text').first().textContent()}`);
      await b.page.evaluate(() => (document.getElementById('messages-scroll').scrollTop = 0));
      await new Promise((r) => setTimeout(r, 300));
    }
    let texts = await b.page.locator('#messages li .text').allTextContents();
    assert.deepEqual(texts, expected, 'every message once, in order');

    // Away for more than a page: the broker goes down while alice posts 60
    // messages (stored, not broadcast). Bob's page catches up with the newest
    // page when the broker is back; the ten before it are still reachable.
    await broker.stop();
    await b.page.waitForFunction(() => document.getElementById('connection').dataset.state !== 'connected');
    const posted = await a.page.evaluate(async () => {
      const csrf = document.querySelector('meta[name="csrf-token"]').content;
      const statuses = [];
      for (let i = 1; i <= 60; i++) {
        const res = await fetch('/api/conversations/1/messages', {
          method: 'POST',
          headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
          body: JSON.stringify({ message: `away ${i}` }),
        });
        statuses.push(res.status);
      }
      return statuses;
    });
    assert.deepEqual([...new Set(posted)], [200]);
    const child = spawn(BROKER_BIN, [], {
      env: { ...process.env, ...CHAT_BROKER_ENV, BROKER_HOST: '127.0.0.1', BROKER_PORT: String(broker.port), RUST_LOG: 'warn' },
      stdio: 'ignore',
    });
    try {
      await waitForHttp(`${broker.url}/health`, { child });
      await b.page.locator('#messages li .text', { hasText: /^away 60$/ }).waitFor({ timeout: 60_000 });
      const deadline2 = Date.now() + 60_000;
      while ((await b.page.locator('#messages li .text', { hasText: /^away 1$/ }).count()) === 0) {
        assert.ok(Date.now() < deadline2, `the messages just before the newest page stay unreachable: ${(await b.page.locator('#messages li .text').allTextContents()).slice(0, 3)}`);
        await b.page.evaluate(() => (document.getElementById('messages-scroll').scrollTop = 0));
        await new Promise((r) => setTimeout(r, 300));
      }
      while ((await b.page.locator('#messages li .text', { hasText: /^old 1$/ }).count()) === 0) {
        assert.ok(Date.now() < deadline2, 'scroll-back reaches the first message again');
        await b.page.evaluate(() => (document.getElementById('messages-scroll').scrollTop = 0));
        await new Promise((r) => setTimeout(r, 300));
      }
    } finally {
      child.kill('SIGTERM');
    }
    texts = await b.page.locator('#messages li .text').allTextContents();
    assert.deepEqual(texts, [...expected, ...Array.from({ length: 60 }, (_, i) => `away ${i + 1}`)], 'every message once, in order');
    const problems = [...a.problems, ...b.problems].filter((p) => !/WebSocket connection to .* failed/.test(p));
    assert.deepEqual(problems, [], 'no script errors');
  } catch (e) {
    for (const u of [a, b]) await shot(u.page, `chat-e2e-scrollback-failure-${u.name}.png`).catch(() => {});
    e.message += `\n--- chat-app output ---\n${chatLogs().slice(-4000)}`;
    throw e;
  } finally {
    for (const u of [a, b]) await u.context.close().catch(() => {});
  }
});

// ---- after a network drop --------------------------------------------------

const CATCH_UP = /^\/api\/conversations\/\d+\/messages$/;

/** Counts the page's database catch-ups (GETs of a conversation's messages) from now on. */
function countCatchUps(page) {
  const counter = { n: 0 };
  page.on('request', (r) => {
    if (r.method() === 'GET' && CATCH_UP.test(new URL(r.url()).pathname)) counter.n += 1;
  });
  return counter;
}

/** Posts `texts` one after another through the chat's HTTP API, as the user of `page`, in the open conversation. */
async function postViaApi(page, texts, gapMs = 0) {
  await page.evaluate(
    async ({ texts, gapMs }) => {
      const csrf = document.querySelector('meta[name="csrf-token"]').content;
      const id = Number(window.location.hash.slice(2));
      for (const message of texts) {
        const res = await fetch(`/api/conversations/${id}/messages`, {
          method: 'POST',
          credentials: 'same-origin',
          headers: { 'X-CSRF-Token': csrf, 'Content-Type': 'application/json' },
          body: JSON.stringify({ message }),
        });
        if (!res.ok) throw new Error(`posting ${message}: ${res.status} ${await res.text()}`);
        if (gapMs) await new Promise((r) => setTimeout(r, gapMs));
      }
    },
    { texts, gapMs },
  );
}

/** The texts of the page's messages that start with `prefix`, in the order shown. */
const shownWith = (page, prefix) =>
  page.evaluate((p) => [...document.querySelectorAll('#messages li .text')].map((e) => e.textContent).filter((t) => t.startsWith(p)), prefix);

async function waitShown(page, prefix, n) {
  await page.waitForFunction(
    ([p, n]) => [...document.querySelectorAll('#messages li .text')].filter((e) => e.textContent.startsWith(p)).length >= n,
    [prefix, n],
    { timeout: 30_000 },
  );
}

/** Waits until the page's broker connection is (`true`) or is not (`false`) live. */
const waitLive = (page, live) =>
  page.waitForFunction((want) => (document.getElementById('connection').dataset.state === 'connected') === want, live, { timeout: 30_000 });

/** The recovery notices (`pusher_internal:recovery` data) the page receives from now on, per channel. */
function recordNotices(page) {
  const notices = [];
  page.on('websocket', (ws) =>
    ws.on('framereceived', ({ payload }) => {
      const frame = JSON.parse(String(payload));
      if (frame.event === 'pusher_internal:recovery') notices.push({ channel: frame.channel, ...JSON.parse(frame.data) });
    }),
  );
  return notices;
}

/** Problems other than Chromium's own report of each reconnection attempt the cut refused. */
const unexpected = (problems) => problems.filter((p) => !/^console: WebSocket connection to '.*' failed: /.test(p));

const missedTexts = (n) => Array.from({ length: n }, (_, i) => `missed ${String(i + 1).padStart(2, '0')}`);

test('a page cut off for 10 s through a proxy shows what was posted meanwhile from the broker replay, not the database', { timeout: 150_000 }, async () => {
  const stack = await startStack(['alice', 'bob'], { proxy: true });
  const a = await openChat('alice', { width: 1100, height: 760 });
  const b = await openChat('bob', { width: 1100, height: 760 });
  try {
    await send(a.page, 'before the cut');
    await theirMessage(b.page, 'before the cut').waitFor();
    await myMessage(a.page, 'before the cut').and(a.page.locator('[data-status="Seen"]')).waitFor();
    const catchUps = countCatchUps(a.page);
    const notices = recordNotices(a.page);

    // Both pages lose the broker for 10 s (the proxy resets their sockets and
    // refuses new ones); bob posts through the chat's HTTP API meanwhile.
    const cutAt = Date.now();
    stack.proxy.cut();
    await waitLive(a.page, false);
    const missed = missedTexts(20);
    await postViaApi(b.page, missed, 250);
    await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - cutAt))));
    assert.deepEqual(await shownWith(a.page, 'missed'), [], 'nothing arrives while cut off');
    stack.proxy.restore();

    // pusher-js reconnects by itself; the broker replays what the pages missed.
    await waitLive(a.page, true);
    await waitShown(a.page, 'missed', missed.length);
    await new Promise((r) => setTimeout(r, 1000)); // a duplicate or a late catch-up would show by now
    assert.deepEqual(await shownWith(a.page, 'missed'), missed, 'every message posted meanwhile, in order, once');
    assert.equal(catchUps.n, 0, 'no database catch-up: the messages came from the broker replay');
    assert.deepEqual(
      notices.filter((n) => n.channel === 'private-a_channel').map((n) => [n.status, n.replayed >= missed.length]),
      [['recovered', true]],
    );
    // Receipts for replayed messages: bob (resumed too) sees his last one Seen by alice.
    await myMessage(b.page, missed.at(-1)).and(b.page.locator('[data-status="Seen"]')).waitFor({ timeout: 30_000 });
    assert.deepEqual(await shownWith(b.page, 'missed'), missed, "bob's page got his messages from the replay too");

    // Live messages flow again.
    await send(b.page, 'live after the cut');
    await theirMessage(a.page, 'live after the cut').waitFor();
    await myMessage(b.page, 'live after the cut').and(b.page.locator('[data-status="Seen"]')).waitFor();
    assert.equal(catchUps.n, 0);
    assert.deepEqual(unexpected([...a.problems, ...b.problems]), [], 'no script errors, CSP violations or dialogs');
    await shot(a.page, 'chat-e2e-recovered.png');
  } catch (e) {
    for (const u of [a, b]) await shot(u.page, `chat-e2e-recovery-failure-${u.name}.png`).catch(() => {});
    e.message += `\n--- chat-app output ---\n${chatLogs().slice(-4000)}`;
    throw e;
  } finally {
    await a.context.close().catch(() => {});
    await b.context.close().catch(() => {});
  }
});

test('when continuity is lost (the broker restarted while cut off) the page catches up from the database', { timeout: 150_000 }, async () => {
  const stack = await startStack(['alice', 'bob'], { proxy: true });
  const a = await openChat('alice', { width: 1100, height: 760 });
  const b = await openChat('bob', { width: 1100, height: 760 });
  let restarted;
  try {
    await send(a.page, 'before the cut');
    await theirMessage(b.page, 'before the cut').waitFor();
    const catchUps = countCatchUps(a.page);
    const notices = recordNotices(a.page);

    stack.proxy.cut();
    await waitLive(a.page, false);
    // The broker restarts (same port, same config): its history starts a new
    // epoch, so the pages' resumes fail with history_lost.
    await stack.broker.stop();
    restarted = spawn(BROKER_BIN, [], {
      env: { ...process.env, ...CHAT_BROKER_ENV, BROKER_HOST: '127.0.0.1', BROKER_PORT: String(stack.broker.port), RUST_LOG: 'warn' },
      stdio: 'ignore',
    });
    await waitForHttp(`${stack.broker.url}/health`, { child: restarted });
    const missed = missedTexts(10);
    await postViaApi(b.page, missed);
    stack.proxy.restore();

    await waitLive(a.page, true);
    await waitShown(a.page, 'missed', missed.length);
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual(await shownWith(a.page, 'missed'), missed, 'every message posted meanwhile, in order, once');
    // The page asked the restarted broker to resume and was told continuity was lost: that is why it caught up.
    assert.deepEqual(
      notices.filter((n) => n.channel === 'private-a_channel').map((n) => [n.status, n.reason]),
      [['failed', 'history_lost']],
    );
    assert.ok(catchUps.n >= 1, 'the page caught up from the database');
    await myMessage(b.page, missed.at(-1)).and(b.page.locator('[data-status="Seen"]')).waitFor({ timeout: 30_000 });

    await send(b.page, 'live after the restart');
    await theirMessage(a.page, 'live after the restart').waitFor();
    assert.deepEqual(unexpected([...a.problems, ...b.problems]), [], 'no script errors, CSP violations or dialogs');
  } catch (e) {
    for (const u of [a, b]) await shot(u.page, `chat-e2e-recovery-lost-failure-${u.name}.png`).catch(() => {});
    e.message += `\n--- chat-app output ---\n${chatLogs().slice(-4000)}`;
    throw e;
  } finally {
    await a.context.close().catch(() => {});
    await b.context.close().catch(() => {});
    restarted?.kill('SIGTERM');
  }
});
