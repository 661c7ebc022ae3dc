// Small helpers shared by the integration tests: stock clients pointed at a
// broker started with ./broker.mjs, event recorders, and a hand-made REST
// signer for requests the official SDKs refuse to send.
import crypto from 'node:crypto';
import Pusher from 'pusher';
import PusherJS from 'pusher-js';

/** How long any single wait may take before the test fails instead of hanging. */
export const TIMEOUT_MS = 5000;

/** Rejects with `what` if `promise` has not settled within `ms`. */
export function withTimeout(promise, what, ms = TIMEOUT_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Retries `fn` (which throws while the condition does not hold) until it passes or the timeout hits. */
export async function eventually(fn, what, ms = TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() > deadline) {
        e.message = `${what}: still failing after ${ms} ms: ${e.message}`;
        throw e;
      }
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The official node server SDK, pointed at the broker. `app` defaults to the broker's default app. */
export function sdkFor(broker, app = {}) {
  return new Pusher({
    appId: app.appId ?? broker.appId,
    key: app.key ?? broker.key,
    secret: app.secret ?? broker.secret,
    host: '127.0.0.1',
    port: String(broker.port),
    useTLS: false,
    timeout: TIMEOUT_MS,
  });
}

/**
 * A pusher-js client connected to the broker (resolves once `connected`).
 * Private and presence subscriptions are authorized with `sdk`; presence ones
 * join as `user` ({user_id, user_info}).
 */
export async function connect(broker, { key = broker.key, sdk, user } = {}) {
  const client = new PusherJS(key, {
    wsHost: '127.0.0.1',
    wsPort: broker.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    cluster: 'mt1',
    channelAuthorization: {
      customHandler: ({ socketId, channelName }, cb) => {
        try {
          if (!sdk) throw new Error('connect() was given no sdk to authorize with');
          cb(null, sdk.authorizeChannel(socketId, channelName, channelName.startsWith('presence-') ? user : undefined));
        } catch (e) {
          cb(e, null);
        }
      },
    },
  });
  try {
    await withTimeout(
      new Promise((resolve, reject) => {
        client.connection.bind('connected', resolve);
        client.connection.bind('failed', () => reject(new Error('pusher-js connection failed')));
      }),
      'pusher-js to connect',
    );
  } catch (e) {
    client.disconnect();
    throw e;
  }
  return client;
}

/**
 * pusher-js clients that a test file opens over many tests and closes in one place:
 * `open(broker, opts)` connects (as `connect`) and remembers the client, `close(c)`
 * disconnects one early, `closeAll()` (for `after()`) disconnects the rest.
 */
export function clientPool() {
  const open = new Set();
  return {
    async open(broker, opts) {
      const c = await connect(broker, opts);
      open.add(c);
      return c;
    },
    close(c) {
      c.disconnect();
      open.delete(c);
    },
    closeAll() {
      for (const c of open) c.disconnect();
      open.clear();
    },
  };
}

/**
 * Records every non-internal event on a channel, in arrival order, as {event, data}.
 * `waitFor(n)` resolves with the list once it holds at least n events.
 */
export function recorder(channel) {
  const events = [];
  const waiters = [];
  channel.bind_global((event, data) => {
    if (event.startsWith('pusher:') || event.startsWith('pusher_internal:')) return;
    events.push({ event, data });
    for (const w of [...waiters]) {
      if (events.length >= w.n) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(events);
      }
    }
  });
  return {
    channel,
    events,
    names: () => events.map((e) => e.event),
    waitFor(n) {
      if (events.length >= n) return Promise.resolve(events);
      return withTimeout(
        new Promise((resolve) => waiters.push({ n, resolve })),
        `${n} event(s) on ${channel.name} (have ${JSON.stringify(events.map((e) => e.event))})`,
      );
    },
  };
}

/** Subscribes and resolves with a recorder once the broker confirms the subscription. */
export async function subscribe(client, name) {
  const channel = client.subscribe(name);
  const rec = recorder(channel);
  await withTimeout(
    new Promise((resolve, reject) => {
      channel.bind('pusher:subscription_succeeded', resolve);
      channel.bind('pusher:subscription_error', (e) => reject(new Error(`subscription to ${name} failed: ${JSON.stringify(e)}`)));
    }),
    `subscription to ${name}`,
  );
  return rec;
}

export const md5 = (text) => crypto.createHash('md5').update(text, 'utf8').digest('hex');

/**
 * Sends a REST request signed by hand, so tests can send what the SDKs refuse to.
 *
 * - `path`: the full path, e.g. `/apps/1/events` (signed exactly as given).
 * - `params`: extra query parameters, covered by the signature.
 * - `body`: a string sent as is, or any other value sent as JSON.
 * - `timestamp`: auth_timestamp in seconds (default now).
 * - `bodyMd5`: override the body_md5 value; `null` leaves it out.
 * - `unsigned`: parameters appended after signing (not covered by the signature).
 *
 * Resolves with {status, body} (body as text).
 */
export async function signedRequest(
  broker,
  { method = 'GET', path, params = {}, body, timestamp, bodyMd5, unsigned = {}, key = broker.key, secret = broker.secret },
) {
  const text = body === undefined ? '' : typeof body === 'string' ? body : JSON.stringify(body);
  const all = {
    ...params,
    auth_key: key,
    auth_timestamp: String(timestamp ?? Math.floor(Date.now() / 1000)),
    auth_version: '1.0',
  };
  if (bodyMd5 !== null && (text !== '' || bodyMd5 !== undefined)) all.body_md5 = bodyMd5 ?? md5(text);
  const sorted = Object.keys(all)
    .map((k) => [k.toLowerCase(), all[k]])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const toSign = [method, path, sorted.map(([k, v]) => `${k}=${v}`).join('&')].join('\n');
  const signature = crypto.createHmac('sha256', secret).update(toSign).digest('hex');
  const query = new URLSearchParams([...Object.entries(all), ['auth_signature', signature], ...Object.entries(unsigned)]);
  const res = await fetch(`${broker.url}${path}?${query}`, {
    method,
    body: text === '' ? undefined : text,
    headers: text === '' ? {} : { 'content-type': 'application/json' },
    signal: AbortSignal.timeout(TIMEOUT_MS),
  });
  return { status: res.status, body: await res.text() };
}

/**
 * Runs an SDK call expected to fail with an HTTP error and returns the SDK's
 * RequestError ({status, body}). Fails if the call succeeds.
 */
export async function expectRequestError(promiseOrFn) {
  try {
    const res = await (typeof promiseOrFn === 'function' ? promiseOrFn() : promiseOrFn);
    const text = res && typeof res.text === 'function' ? await res.text() : String(res);
    throw Object.assign(new Error(`expected an HTTP error, got ${res?.status}: ${text}`), { unexpectedSuccess: true });
  } catch (e) {
    if (e.unexpectedSuccess) throw e;
    if (e.status === undefined) throw e;
    return e;
  }
}
