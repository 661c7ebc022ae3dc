// The chat in a real browser: a real broker, the chat-app binary on a fresh
// PostgreSQL database, and two users in separate Chromium contexts.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { startBroker, freePort, waitForHttp, ROOT, BROKER_BIN } from './lib/broker.mjs';

const CHAT_BIN = process.env.CHAT_BIN || path.join(ROOT, 'target/debug/chat-app');
const ADMIN_URL = process.env.CHAT_TEST_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'test-artifacts');
const PASSWORD = 'e2e-password-1';
const XSS = '<img src=x onerror=alert(1)>';

let broker;
let chat;
let chatLogs = '';
let dbName;
let baseUrl;
let browser;

function psql(sql) {
  const r = spawnSync('psql', [ADMIN_URL, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr || r.error}`);
}

function chatEnv(extra = {}) {
  const base = ADMIN_URL.slice(0, ADMIN_URL.lastIndexOf('/'));
  return {
    ...process.env,
    DATABASE_URL: `${base}/${dbName}`,
    PUSHER_URL: broker.url,
    RUST_LOG: process.env.RUST_LOG || 'warn',
    ...extra,
  };
}

function createUser(name) {
  const r = spawnSync(CHAT_BIN, ['create-user', name], { input: `${PASSWORD}\n`, env: chatEnv(), encoding: 'utf8' });
  assert.equal(r.status, 0, `create-user ${name}: ${r.stderr}`);
}

before(async () => {
  assert.ok(fs.existsSync(CHAT_BIN), `${CHAT_BIN} is missing: run cargo build --workspace`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  dbName = `chat_e2e_${process.pid}_${crypto.randomBytes(4).toString('hex')}`;
  psql(`CREATE DATABASE "${dbName}"`);
  broker = await startBroker();
  createUser('alice');
  createUser('bob');

  const port = await freePort();
  baseUrl = `http://127.0.0.1:${port}`;
  chat = spawn(CHAT_BIN, [], {
    env: chatEnv({
      CHAT_HOST: '127.0.0.1',
      CHAT_PORT: String(port),
      SESSION_KEY: crypto.randomBytes(48).toString('hex'),
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  chat.stdout.on('data', (d) => (chatLogs += d));
  chat.stderr.on('data', (d) => (chatLogs += d));
  await waitForHttp(`${baseUrl}/health`, { child: chat });

  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  if (chat && chat.exitCode === null) {
    const exited = new Promise((r) => chat.once('exit', r));
    chat.kill('SIGTERM');
    await exited;
  }
  await broker?.stop();
  if (dbName) psql(`DROP DATABASE IF EXISTS "${dbName}" WITH (FORCE)`);
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
async function openSpy() {
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
    { wsPort, channels: ['private-a_channel', 'presence-chat', 'private-typing', 'a_channel'] },
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
      env: { ...process.env, BROKER_HOST: '127.0.0.1', BROKER_PORT: String(broker.port), RUST_LOG: 'warn' },
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
    e.message += `\n--- chat-app output ---\n${chatLogs.slice(-4000)}`;
    throw e;
  } finally {
    await a.context.close().catch(() => {});
  }
});
