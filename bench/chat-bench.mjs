#!/usr/bin/env node
// The chat benchmark (issue 18): a release broker and a release chat-app on a
// fresh PostgreSQL database, N users in groups, each logged in through the
// chat's own forms and connected with the stock pusher-js Node build; messages
// are posted at a fixed total rate through the HTTP API, every recipient sends
// its Delivered receipt the way web/chat.js does, and each sender times
// post → "delivered to every recipient" (the `receipts` event reaching it).
// At the end the database is checked: every message stored, every expected
// receipt stored. Run it through scripts/bench-chat (which builds first);
// `--help` lists the flags.
import { parseArgs } from 'node:util';
import { spawn, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import PusherJS from 'pusher-js';
import { startBroker, freePort, waitForHttp, ROOT } from '../tests/lib/broker.mjs';

const USAGE = `usage: node bench/chat-bench.mjs [flags]   (normally via scripts/bench-chat)
  --users N            users (default 200); a multiple of --group-size
  --group-size N       members per group conversation, creator included (default 4)
  --rate N             messages posted per second, all senders together (default 200)
  --seconds N          how long to post (default 60)
  --drain-seconds N    most time to wait for the last receipts after posting stops (default 20)
  --setup-concurrency N  signups/logins/connections in flight during setup (default 8)
  --max-in-flight N    posts awaiting an answer before the generator skips one (default 2000)
  --out DIR            where the JSON line and the table go (default target/bench)
Environment: BROKER_BIN, CHAT_BIN (default target/release/{broker,chat-app}),
CHAT_BENCH_ADMIN_URL (default postgres://postgres@127.0.0.1:5432/postgres).`;

const { values: flags } = parseArgs({
  options: {
    users: { type: 'string', default: '200' },
    'group-size': { type: 'string', default: '4' },
    rate: { type: 'string', default: '200' },
    seconds: { type: 'string', default: '60' },
    'drain-seconds': { type: 'string', default: '20' },
    'setup-concurrency': { type: 'string', default: '8' },
    'max-in-flight': { type: 'string', default: '2000' },
    out: { type: 'string', default: path.join(ROOT, 'target/bench') },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (flags.help) {
  console.log(USAGE);
  process.exit(0);
}

/** A whole number flag within [min, max], or exit 2 naming it. */
function intFlag(name, min, max) {
  const v = Number(flags[name]);
  if (!Number.isInteger(v) || v < min || v > max) {
    console.error(`chat-bench: --${name} must be a whole number from ${min} to ${max}, got ${JSON.stringify(flags[name])}`);
    process.exit(2);
  }
  return v;
}
const USERS = intFlag('users', 2, 5000);
const GROUP = intFlag('group-size', 2, 50);
const RATE = intFlag('rate', 1, 5000);
const SECONDS = intFlag('seconds', 1, 600);
const DRAIN_S = intFlag('drain-seconds', 1, 300);
const SETUP_CONC = intFlag('setup-concurrency', 1, 64);
const MAX_IN_FLIGHT = intFlag('max-in-flight', 1, 100000);
if (USERS % GROUP !== 0) {
  console.error(`chat-bench: --users (${USERS}) must be a multiple of --group-size (${GROUP})`);
  process.exit(2);
}
const CONVERSATIONS = USERS / GROUP;

const CHAT_BIN = process.env.CHAT_BIN || path.join(ROOT, 'target/release/chat-app');
const ADMIN_URL = process.env.CHAT_BENCH_ADMIN_URL || 'postgres://postgres@127.0.0.1:5432/postgres';
/** Any single HTTP request during the run; a slower answer counts as failed. */
const HTTP_TIMEOUT_MS = 30000;
/** Setup (accounts, groups, connections) must finish within this. */
const SETUP_LIMIT_MS = 120000 + USERS * 1000;
/** web/chat.js batches receipts for 50 ms before sending them (queueReceipt). */
const RECEIPT_BATCH_MS = 50;
/** Most ids in one receipts request (the chat's MAX_RECEIPT_BATCH). */
const RECEIPT_CHUNK = 200;
const PASSWORD = `bench-${crypto.randomBytes(6).toString('hex')}`;

const log = (...a) => console.error('==', ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- processes and the database -------------------------------------------------

const state = { broker: null, chat: null, chatLogs: '', dbName: null, users: [], cleaning: null };

function psql(sql, db = ADMIN_URL) {
  const r = spawnSync('psql', [db, '-v', 'ON_ERROR_STOP=1', '-qAt', '-F', '\t', '-f', '-'], { input: sql, encoding: 'utf8', timeout: 60000 });
  if (r.status !== 0) throw new Error(`psql failed: ${r.stderr || r.error}`);
  return r.stdout.trim();
}

/** Everything this run started, stopped; its database dropped. Safe to call twice. */
function cleanup() {
  if (state.cleaning) return state.cleaning;
  state.cleaning = (async () => {
    for (const u of state.users) u.pusher?.disconnect();
    if (state.chat && state.chat.exitCode === null) {
      const exited = new Promise((r) => state.chat.once('exit', r));
      state.chat.kill('SIGTERM');
      const t = setTimeout(() => state.chat.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    }
    await state.broker?.stop().catch(() => {});
    if (state.dbName) {
      try {
        psql(`DROP DATABASE IF EXISTS "${state.dbName}" WITH (FORCE)`);
      } catch (e) {
        console.error(`chat-bench: could not drop database ${state.dbName}: ${e.message}`);
      }
    }
  })();
  return state.cleaning;
}

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.once(sig, () => {
    console.error(`chat-bench: ${sig}, stopping`);
    cleanup().finally(() => process.exit(130));
  });
}

/** CPU seconds (user + system) a process has used so far, from /proc/PID/stat. */
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;
function cpuSeconds(pid) {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / CLK_TCK; // utime, stime (fields 14, 15)
  } catch {
    return NaN;
  }
}

async function startChat(brokerUrl, databaseUrl) {
  const port = await freePort();
  const env = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    PUSHER_URL: brokerUrl,
    CHAT_HOST: '127.0.0.1',
    CHAT_PORT: String(port),
    SESSION_KEY: crypto.randomBytes(48).toString('hex'),
    RUST_LOG: 'warn',
    // Setup signs up and logs in every user from this one address within a
    // minute or two: far past the per-address defaults (10 signups, 30 logins a
    // minute), which stay in force in any real deployment. Nothing logs in
    // while messages flow, so the raised limits do not touch what is measured.
    CHAT_SIGNUP_PER_IP_PER_MIN: String(USERS * 2),
    CHAT_LOGIN_PER_IP_PER_MIN: String(USERS * 2),
  };
  const child = spawn(CHAT_BIN, [], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  state.chat = child;
  const keep = (d) => {
    state.chatLogs += d;
    if (state.chatLogs.length > 200000) state.chatLogs = state.chatLogs.slice(-100000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/health`, { child, timeoutMs: 60000 });
  return { url, pid: child.pid };
}

// ---- one user's browser: cookies, the page's CSRF token ---------------------------

class User {
  constructor(index) {
    this.index = index;
    this.name = `bench${String(index).padStart(4, '0')}`;
    this.cookies = new Map();
    this.csrf = null;
    this.id = null;
    this.conv = null; // { id, channel }
    this.pusher = null;
    this.pending = new Set();
    this.flushTimer = null;
  }

  cookieHeader() {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }

  remember(res) {
    for (const c of res.headers.getSetCookie()) {
      const [pair, ...attrs] = c.split(';');
      const eq = pair.indexOf('=');
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      const expired = attrs.some((a) => /^\s*max-age=0\s*$/i.test(a));
      if (expired || value === '') this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  /** A request with this user's cookies (and the page's CSRF header once known); redirects are not followed. */
  async request(method, url, { form, json } = {}) {
    const headers = {};
    if (this.cookies.size) headers.Cookie = this.cookieHeader();
    if (this.csrf) headers['X-CSRF-Token'] = this.csrf;
    let body;
    if (form) {
      headers['Content-Type'] = 'application/x-www-form-urlencoded';
      body = new URLSearchParams(form).toString();
    } else if (json) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    }
    const res = await fetch(url, { method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
    this.remember(res);
    return res;
  }
}

async function expectStatus(res, status, what) {
  if (res.status !== status) {
    const text = (await res.text().catch(() => '')).replace(/\s+/g, ' ').slice(0, 300);
    throw new Error(`${what}: HTTP ${res.status} (wanted ${status}): ${text}`);
  }
  return res;
}

const formToken = (html) => (html.match(/name="csrf_token" value="([^"]+)"/) || [])[1];
const metaOf = (html, name) => (html.match(new RegExp(`<meta name="${name}" content="([^"]*)">`)) || [])[1];

/** Signs up through the form, then logs in afresh through the login form (both with their CSRF tokens), then reads the chat page's settings. */
async function signUpAndLogIn(base, u) {
  const signupForm = await (await expectStatus(await u.request('GET', `${base}/signup`), 200, 'GET /signup')).text();
  await expectStatus(await u.request('POST', `${base}/signup`, { form: { username: u.name, password: PASSWORD, csrf_token: formToken(signupForm) } }), 303, `signup ${u.name}`);
  u.cookies.clear(); // a new browser: log in as the user would tomorrow
  const loginForm = await (await expectStatus(await u.request('GET', `${base}/login`), 200, 'GET /login')).text();
  const res = await expectStatus(await u.request('POST', `${base}/login`, { form: { username: u.name, password: PASSWORD, csrf_token: formToken(loginForm) } }), 303, `login ${u.name}`);
  await res.arrayBuffer();
  const page = await (await expectStatus(await u.request('GET', `${base}/`), 200, 'GET / after login')).text();
  u.csrf = metaOf(page, 'csrf-token');
  u.id = Number(metaOf(page, 'chat-user-id'));
  if (!u.csrf || !u.id) throw new Error(`the chat page for ${u.name} has no csrf-token or chat-user-id`);
  return { key: metaOf(page, 'pusher-key'), wsHost: metaOf(page, 'pusher-ws-host'), wsPort: Number(metaOf(page, 'pusher-ws-port')) };
}

/** Runs `fn` over `items` with at most `n` at once; the first failure rejects. */
async function pool(items, n, fn) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const item = items[next++];
      await fn(item);
    }
  };
  await Promise.all(Array.from({ length: Math.min(n, items.length) }, worker));
}

// ---- measurements -------------------------------------------------------------------

/** message id → what we know of it. Entries for ids not yet answered by POST wait in `early`. */
const messages = new Map();
/** `${userIndex}:${messageId}` → time the sender saw delivered ≥ 1 / = all, before its POST answered. */
const early = new Map();
const counts = {
  planned: 0,
  skipped: 0, // not posted: too many posts already awaiting an answer
  posted: 0,
  acked: 0, // POST answered 200
  postFailed: 0,
  notBroadcast: 0, // 200 with broadcast: false
  eventsReceived: 0, // an_event at a recipient
  receiptRequests: 0,
  receiptRequestsFailed: 0,
  receiptIdsSent: 0,
  receiptIdsChanged: 0,
  noticesWhileOpen: 0, // new_message notices, ignored as the page does for the open conversation
};
const receivedBy = new Map(); // message id → recipients that got an_event
const postMs = [];
const receiptMs = [];
let maxLateMs = 0;

function percentile(sorted, p) {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
function summary(values) {
  const s = Float64Array.from(values).sort();
  return { n: s.length, p50: percentile(s, 50), p90: percentile(s, 90), p99: percentile(s, 99), max: s.length ? s[s.length - 1] : NaN };
}

/** The sender sees a `receipts` event: note when the message first counted one recipient, and when all of them. */
function senderSaw(u, update, now) {
  const rec = messages.get(update.id);
  if (rec) {
    if (rec.sender !== u.index) return;
    if (update.delivered >= 1 && rec.firstAt === undefined) rec.firstAt = now;
    if (update.delivered >= update.recipients && rec.allAt === undefined) rec.allAt = now;
    return;
  }
  const k = `${u.index}:${update.id}`;
  const e = early.get(k) || {};
  if (update.delivered >= 1 && e.first === undefined) e.first = now;
  if (update.delivered >= update.recipients && e.all === undefined) e.all = now;
  early.set(k, e);
}

// ---- the page's behaviour, per user -----------------------------------------------

/** web/chat.js flushReceipts: one request per status with every queued id. */
async function flushReceipts(base, u) {
  u.flushTimer = null;
  const ids = [...u.pending];
  u.pending.clear();
  for (let i = 0; i < ids.length; i += RECEIPT_CHUNK) {
    const chunk = ids.slice(i, i + RECEIPT_CHUNK);
    const t0 = performance.now();
    counts.receiptRequests++;
    counts.receiptIdsSent += chunk.length;
    try {
      const res = await u.request('POST', `${base}/api/conversations/${u.conv.id}/receipts`, { json: { status: 'Delivered', ids: chunk, socket_id: u.pusher.connection.socket_id } });
      if (!res.ok) {
        counts.receiptRequestsFailed++;
        await res.arrayBuffer();
        continue;
      }
      const answer = await res.json();
      counts.receiptIdsChanged += answer.changed.length;
      receiptMs.push(performance.now() - t0);
    } catch {
      counts.receiptRequestsFailed++;
    }
  }
}

/** Connects like the page: pusher-js to the broker, sign-in and channel auth through the chat's endpoints. */
function connectUser(base, u, settings) {
  // pusher-js's ajax transport posts this same form; a customHandler lets it carry
  // the session cookie, which Node (unlike a browser) does not keep by itself.
  const viaChat = (endpoint) => async (params, cb) => {
    try {
      const form = { socket_id: params.socketId };
      if (params.channelName) form.channel_name = params.channelName;
      const res = await u.request('POST', `${base}${endpoint}`, { form });
      if (!res.ok) return cb(new Error(`${endpoint}: HTTP ${res.status}`), null);
      cb(null, await res.json());
    } catch (e) {
      cb(e, null);
    }
  };
  const pusher = new PusherJS(settings.key, {
    wsHost: settings.wsHost,
    wsPort: settings.wsPort,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    enableStats: false,
    channelAuthorization: { customHandler: viaChat('/pusher/auth') },
    userAuthentication: { customHandler: viaChat('/pusher/user-auth') },
  });
  u.pusher = pusher;
  const signedIn = new Promise((resolve) => pusher.connection.bind('message', (m) => m.event === 'pusher:signin_success' && resolve()));
  pusher.signin();
  pusher.user.bind('new_message', (m) => {
    // The page ignores notices for the conversation it has open: the channel brings the message.
    if (m && m.conversation_id === u.conv.id) counts.noticesWhileOpen++;
  });
  const ch = pusher.subscribe(u.conv.channel);
  const subscribed = new Promise((resolve, reject) => {
    ch.bind('pusher:subscription_succeeded', resolve);
    ch.bind('pusher:subscription_error', (e) => reject(new Error(`${u.name} could not subscribe to ${u.conv.channel}: ${JSON.stringify(e)}`)));
  });
  ch.bind('an_event', (data) => {
    if (!data || data.sender_id === u.id) return;
    counts.eventsReceived++;
    receivedBy.set(data.id, (receivedBy.get(data.id) || 0) + 1);
    // queueReceipt: Delivered, sent after 50 ms with whatever else arrived meanwhile.
    u.pending.add(data.id);
    if (!u.flushTimer) u.flushTimer = setTimeout(() => flushReceipts(state.chatUrl, u), RECEIPT_BATCH_MS);
  });
  ch.bind('receipts', (data) => {
    const now = performance.now();
    for (const update of data?.updates || []) senderSaw(u, update, now);
  });
  return Promise.all([signedIn, subscribed]);
}

// ---- the run -------------------------------------------------------------------------

async function post(base, k, u) {
  const t0 = performance.now();
  counts.posted++;
  try {
    const res = await u.request('POST', `${base}/api/conversations/${u.conv.id}/messages`, { json: { message: `bench message ${k} from ${u.name}` } });
    const t1 = performance.now();
    if (!res.ok) {
      counts.postFailed++;
      await res.arrayBuffer();
      return;
    }
    const m = await res.json();
    counts.acked++;
    postMs.push(t1 - t0);
    if (m.broadcast === false) counts.notBroadcast++;
    const rec = { sender: u.index, t0, recipients: m.recipients, firstAt: undefined, allAt: undefined };
    const e = early.get(`${u.index}:${m.id}`);
    if (e) {
      rec.firstAt = e.first;
      rec.allAt = e.all;
      early.delete(`${u.index}:${m.id}`);
    }
    messages.set(m.id, rec);
  } catch {
    counts.postFailed++;
  }
}

async function run() {
  const started = Date.now();
  const watchdog = setTimeout(() => {
    console.error('chat-bench: setup took too long; stopping');
    cleanup().finally(() => process.exit(1));
  }, SETUP_LIMIT_MS);

  state.dbName = `chat_bench_${process.pid}_${crypto.randomBytes(4).toString('hex')}`;
  psql(`CREATE DATABASE "${state.dbName}"`);
  const databaseUrl = `${ADMIN_URL.slice(0, ADMIN_URL.lastIndexOf('/'))}/${state.dbName}`;
  state.broker = await startBroker();
  const chat = await startChat(state.broker.url, databaseUrl);
  state.chatUrl = chat.url;
  log(`broker ${state.broker.url} (pid ${state.broker.pid}), chat ${chat.url} (pid ${chat.pid}), database ${state.dbName}`);

  state.users = Array.from({ length: USERS }, (_, i) => new User(i));
  let settings;
  log(`signing up and logging in ${USERS} users (${SETUP_CONC} at a time)`);
  await pool(state.users, SETUP_CONC, async (u) => {
    settings = await signUpAndLogIn(chat.url, u);
  });

  log(`creating ${CONVERSATIONS} groups of ${GROUP}`);
  const groups = Array.from({ length: CONVERSATIONS }, (_, g) => state.users.slice(g * GROUP, (g + 1) * GROUP));
  await pool(groups, SETUP_CONC, async (members) => {
    const [creator, ...others] = members;
    const res = await expectStatus(
      await creator.request('POST', `${chat.url}/api/conversations`, { json: { kind: 'group', title: `bench group ${creator.index / GROUP}`, usernames: others.map((o) => o.name) } }),
      200,
      'create group',
    );
    const s = await res.json();
    for (const m of members) m.conv = { id: s.id, channel: s.channel };
  });
  // Each member's sidebar (GET /api/conversations) must list the group under the same channel.
  await pool(state.users, SETUP_CONC, async (u) => {
    const list = await (await expectStatus(await u.request('GET', `${chat.url}/api/conversations`), 200, 'GET /api/conversations')).json();
    const mine = list.find((c) => c.id === u.conv.id);
    if (!mine || mine.channel !== u.conv.channel) throw new Error(`${u.name}'s sidebar lacks its group ${u.conv.id}`);
  });

  log(`connecting ${USERS} pusher-js clients (sign-in + ${USERS} private-channel subscriptions)`);
  await pool(state.users, SETUP_CONC * 4, (u) => connectUser(chat.url, u, settings));
  clearTimeout(watchdog);
  // Posting, draining and checking are bounded too.
  setTimeout(() => {
    console.error('chat-bench: the run overran its time limit; stopping');
    cleanup().finally(() => process.exit(1));
  }, (SECONDS + DRAIN_S + 120) * 1000).unref();
  const setupSeconds = (Date.now() - started) / 1000;

  // Posting: message k is due at start + k/RATE, sent by user k mod USERS (round robin).
  const total = RATE * SECONDS;
  counts.planned = total;
  const interval = 1000 / RATE;
  const cpu0 = { broker: cpuSeconds(state.broker.pid), chat: cpuSeconds(chat.pid), self: process.cpuUsage() };
  const load0 = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
  log(`posting ${RATE} messages/s for ${SECONDS} s (${total} messages; load average ${load0})`);
  const t0 = performance.now() + 50;
  let inFlight = 0;
  for (let k = 0; k < total; ) {
    const now = performance.now();
    while (k < total && t0 + k * interval <= now) {
      maxLateMs = Math.max(maxLateMs, now - (t0 + k * interval));
      if (inFlight >= MAX_IN_FLIGHT) {
        counts.skipped++;
      } else {
        inFlight++;
        post(chat.url, k, state.users[k % USERS]).finally(() => inFlight--);
      }
      k++;
    }
    if (k < total) await sleep(Math.max(0, t0 + k * interval - performance.now()));
  }
  const sendEnd = performance.now();

  // Drain: until every post is answered and every answered message is delivered at its sender, or the limit.
  const drainUntil = sendEnd + DRAIN_S * 1000;
  const complete = () => inFlight === 0 && [...messages.values()].every((r) => r.allAt !== undefined);
  while (performance.now() < drainUntil && !complete()) await sleep(100);
  // Receipts still queued or in flight settle within the request timeout; give them a moment.
  await sleep(RECEIPT_BATCH_MS * 4);
  const measuredS = (performance.now() - t0) / 1000;
  const cpu1 = { broker: cpuSeconds(state.broker.pid), chat: cpuSeconds(chat.pid), self: process.cpuUsage(cpu0.self) };
  const load1 = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');

  // What the database holds, for the groups this run made.
  const groupIds = [...new Set(state.users.map((u) => u.conv.id))].join(',');
  const ackedIds = [...messages.keys()];
  const [stored, expected, storedReceipts, short, ackedStored] = psql(
    `WITH m AS (SELECT id, conversation_id, sender_id FROM messages WHERE conversation_id IN (${groupIds})),
          want AS (SELECT m.id, count(mb.user_id) AS n FROM m JOIN members mb ON mb.conversation_id = m.conversation_id AND mb.user_id <> m.sender_id GROUP BY m.id),
          got AS (SELECT m.id, count(r.user_id) AS n FROM m JOIN receipts r ON r.message_id = m.id AND r.user_id <> m.sender_id AND r.delivered_at IS NOT NULL GROUP BY m.id)
     SELECT (SELECT count(*) FROM m),
            (SELECT coalesce(sum(n), 0) FROM want),
            (SELECT coalesce(sum(n), 0) FROM got),
            (SELECT count(*) FROM want LEFT JOIN got USING (id) WHERE coalesce(got.n, 0) < want.n),
            (SELECT count(*) FROM m WHERE id = ANY('{${ackedIds.join(',')}}'::bigint[]));`,
    databaseUrl,
  )
    .split('\t')
    .map(Number);

  const recs = [...messages.values()];
  const all = summary(recs.filter((r) => r.allAt !== undefined).map((r) => r.allAt - r.t0));
  const first = summary(recs.filter((r) => r.firstAt !== undefined).map((r) => r.firstAt - r.t0));
  const expectedEvents = recs.reduce((n, r) => n + r.recipients, 0);
  let eventsForAcked = 0;
  for (const [id, rec] of messages) eventsForAcked += Math.min(receivedBy.get(id) || 0, rec.recipients);

  const result = {
    bench: 'chat',
    date: new Date().toISOString(),
    host: { cores: (await import('node:os')).cpus().length, loadavg_before: load0, loadavg_after: load1 },
    users: USERS,
    group_size: GROUP,
    conversations: CONVERSATIONS,
    rate: RATE,
    seconds: SECONDS,
    setup_seconds: setupSeconds,
    measured_seconds: measuredS,
    generator_max_late_ms: maxLateMs,
    counts,
    messages_acked_delivered_at_sender: all.n,
    recipient_events_expected: expectedEvents,
    recipient_events_received: eventsForAcked,
    db: { messages_stored: stored, acked_messages_stored: ackedStored, receipts_expected: expected, receipts_stored: storedReceipts, messages_missing_receipts: short },
    post_to_delivered_all_ms: all,
    post_to_delivered_first_ms: first,
    post_http_ms: summary(postMs),
    receipt_http_ms: summary(receiptMs),
    cpu_seconds: { broker: cpu1.broker - cpu0.broker, chat_app: cpu1.chat - cpu0.chat, generator: (cpu1.self.user + cpu1.self.system) / 1e6 },
  };
  const chatErrors = state.chatLogs.split('\n').filter((l) => /ERROR|panicked/.test(l));
  result.chat_app_error_lines = chatErrors.length;
  return result;
}

function table(r) {
  const f = (x) => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) : '–');
  const q = (s) => `${f(s.p50)} / ${f(s.p90)} / ${f(s.p99)} / ${f(s.max)}`;
  const pct = (cpu) => `${f(cpu)} s (${f((100 * cpu) / r.measured_seconds)} % of a core)`;
  const c = r.counts;
  return [
    `chat benchmark: ${r.users} users in ${r.conversations} groups of ${r.group_size}, ${r.rate} messages/s for ${r.seconds} s; ` +
      `${r.host.cores} cores, load average ${r.host.loadavg_before} before / ${r.host.loadavg_after} after; ${r.date.slice(0, 16).replace('T', ' ')} UTC`,
    '',
    '| metric | value |',
    '|---|---:|',
    `| messages posted / planned (skipped: generator backlog) | ${c.posted} / ${c.planned} (${c.skipped}) |`,
    `| messages acknowledged (200) / failed | ${c.acked} / ${c.postFailed} |`,
    `| acknowledged and stored in the database | ${r.db.acked_messages_stored} / ${c.acked} |`,
    `| \`an_event\` at recipients / expected | ${r.recipient_events_received} / ${r.recipient_events_expected} |`,
    `| receipts stored / expected (messages missing any) | ${r.db.receipts_stored} / ${r.db.receipts_expected} (${r.db.messages_missing_receipts}) |`,
    `| receipt requests (failed) / ids sent | ${c.receiptRequests} (${c.receiptRequestsFailed}) / ${c.receiptIdsSent} |`,
    `| delivered to all recipients, seen at sender | ${r.messages_acked_delivered_at_sender} / ${c.acked} |`,
    `| post → delivered to all, at sender p50 / p90 / p99 / max (ms) | ${q(r.post_to_delivered_all_ms)} |`,
    `| post → first recipient's receipt at sender p50 / p90 / p99 / max (ms) | ${q(r.post_to_delivered_first_ms)} |`,
    `| POST message HTTP p50 / p90 / p99 / max (ms) | ${q(r.post_http_ms)} |`,
    `| POST receipts HTTP p50 / p90 / p99 / max (ms) | ${q(r.receipt_http_ms)} |`,
    `| broker CPU | ${pct(r.cpu_seconds.broker)} |`,
    `| chat-app CPU | ${pct(r.cpu_seconds.chat_app)} |`,
    `| generator (Node) CPU | ${pct(r.cpu_seconds.generator)} |`,
    `| measured window (posting + drain) / setup | ${f(r.measured_seconds)} s / ${f(r.setup_seconds)} s |`,
  ].join('\n');
}

let exitCode = 0;
try {
  const result = await run();
  fs.mkdirSync(flags.out, { recursive: true });
  const stamp = result.date.replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  fs.appendFileSync(path.join(flags.out, `chat-${stamp}.jsonl`), JSON.stringify(result) + '\n');
  const md = table(result);
  fs.writeFileSync(path.join(flags.out, `chat-${stamp}.md`), md + '\n');
  console.log(md);
  log(`raw JSON: ${path.join(flags.out, `chat-${stamp}.jsonl`)}`);
  if (result.chat_app_error_lines) log(`the chat-app logged ${result.chat_app_error_lines} error lines`);
  const lost = result.db.receipts_expected - result.db.receipts_stored;
  if (result.counts.acked === 0 || lost !== 0 || result.db.acked_messages_stored !== result.counts.acked) {
    console.error(`chat-bench: FAILED: ${lost} receipts missing, ${result.counts.acked - result.db.acked_messages_stored} acknowledged messages not stored`);
    exitCode = 1;
  }
} catch (e) {
  console.error(`chat-bench: ${e.stack || e}`);
  if (state.chatLogs) console.error(`--- chat-app log (tail) ---\n${state.chatLogs.slice(-3000)}`);
  exitCode = 1;
} finally {
  await cleanup();
}
process.exit(exitCode);
