// The official Python `pusher` SDK (3.3.4, in .venv) against the broker's REST
// API, with pusher-js subscribers checking delivery. The SDK calls are made by
// tests/python_sdk_client.py, which prints each call's JSON result.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

import { ROOT, startBroker } from './lib/broker.mjs';
import { clientPool, sdkFor, subscribe, TIMEOUT_MS } from './lib/clients.mjs';

const PYTHON = path.join(ROOT, '.venv/bin/python');
const SCRIPT = path.join(ROOT, 'tests/python_sdk_client.py');

let broker;
let sdk;
const clients = clientPool();

before(async () => {
  assert.ok(
    fs.existsSync(PYTHON),
    `${PYTHON} is missing: python3 -m venv .venv && .venv/bin/pip install -r tests/requirements.txt`,
  );
  // History through the environment overlay, for the first (default) app's py-hist-* channels only.
  broker = await startBroker({ env: { BROKER_APP_HISTORY_CHANNELS: 'py-hist-', BROKER_APP_HISTORY_MAX_PAGE: '3' } });
  sdk = sdkFor(broker);
});

after(async () => {
  clients.closeAll();
  await broker?.stop();
});

const client = (opts = {}) => clients.open(broker, { sdk, ...opts });

/** Runs the calls through the Python SDK; resolves with one {ok} / {error, message} per call. */
function python(calls) {
  const env = {
    ...process.env,
    PUSHER_HOST: '127.0.0.1',
    PUSHER_PORT: String(broker.port),
    PUSHER_APP_ID: broker.appId,
    PUSHER_KEY: broker.key,
    PUSHER_SECRET: broker.secret,
  };
  return new Promise((resolve, reject) => {
    execFile(PYTHON, [SCRIPT, JSON.stringify(calls)], { env, timeout: 4 * TIMEOUT_MS }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`python_sdk_client.py failed: ${err.message}\n${stderr}`));
      try {
        const results = JSON.parse(stdout);
        assert.equal(results.length, calls.length);
        resolve(results);
      } catch (e) {
        reject(new Error(`unexpected output from python_sdk_client.py: ${stdout}\n${stderr}\n${e.message}`));
      }
    });
  });
}

test('Python SDK triggers reach pusher-js subscribers; socket_id excludes the sender', async () => {
  const sender = await client();
  const other = await client();
  const recSender = await subscribe(sender, 'py-chan');
  const recOther = await subscribe(other, 'py-chan');
  const recMulti = await subscribe(other, 'py-other');
  const data = { text: 'from python ✓ "quoted"', n: 7, list: [1, null, true] };

  const results = await python([
    { op: 'trigger', channels: 'py-chan', event: 'py-event', data },
    { op: 'trigger', channels: ['py-chan'], event: 'py-excluded', data: 'not for the sender', socket_id: sender.connection.socket_id },
    { op: 'trigger', channels: ['py-chan', 'py-other'], event: 'py-multi', data: 'plain text' },
    { op: 'trigger_batch', batch: [{ channel: 'py-chan', name: 'py-batch', data: { b: 1 } }] },
  ]);
  assert.deepEqual(results, [{ ok: {} }, { ok: {} }, { ok: {} }, { ok: {} }]);

  await recOther.waitFor(4);
  assert.deepEqual(recOther.events, [
    { event: 'py-event', data },
    { event: 'py-excluded', data: 'not for the sender' },
    { event: 'py-multi', data: 'plain text' },
    { event: 'py-batch', data: { b: 1 } },
  ]);
  await recMulti.waitFor(1);
  assert.deepEqual(recMulti.events, [{ event: 'py-multi', data: 'plain text' }]);
  // Later events arrived, so the excluded one would have come before them.
  await recSender.waitFor(3);
  assert.deepEqual(recSender.names(), ['py-event', 'py-multi', 'py-batch']);
});

test('Python SDK channel_info, channels_info and users_info', async () => {
  await subscribe(await client(), 'pyinfo-a');
  await subscribe(await client(), 'pyinfo-a');
  await subscribe(await client({ user: { user_id: 'p1', user_info: {} } }), 'presence-py');
  await subscribe(await client({ user: { user_id: 'p1', user_info: {} } }), 'presence-py');
  await subscribe(await client({ user: { user_id: 'p2', user_info: {} } }), 'presence-py');

  const results = await python([
    { op: 'channel_info', channel: 'pyinfo-a', attributes: ['subscription_count'] },
    { op: 'channel_info', channel: 'pyinfo-empty' },
    { op: 'channel_info', channel: 'presence-py', attributes: ['user_count', 'subscription_count'] },
    { op: 'channels_info', prefix_filter: 'pyinfo-' },
    { op: 'channels_info', prefix_filter: 'presence-py', attributes: ['user_count'] },
    { op: 'users_info', channel: 'presence-py' },
  ]);
  assert.deepEqual(results.slice(0, 5), [
    { ok: { occupied: true, subscription_count: 2 } },
    { ok: { occupied: false } },
    { ok: { occupied: true, user_count: 2, subscription_count: 3 } },
    { ok: { channels: { 'pyinfo-a': {} } } },
    { ok: { channels: { 'presence-py': { user_count: 2 } } } },
  ]);
  assert.deepEqual(results[5].ok.users.map((u) => u.id).sort(), ['p1', 'p2']);
});

test('Python SDK sees the broker refuse bad requests', async () => {
  const results = await python([
    { op: 'trigger', channels: 'py-chan', event: 'e', data: {}, secret: 'wrong-secret' },
    { op: 'channels_info', attributes: ['user_count'] },
    { op: 'users_info', channel: 'pyinfo-a' },
    { op: 'trigger', channels: 'py-chan', event: 'e', data: {}, app_id: '404' },
  ]);
  assert.equal(results[0].error, 'PusherBadAuth', JSON.stringify(results[0]));
  assert.match(results[0].message, /signature/i);
  assert.equal(results[1].error, 'PusherBadRequest', JSON.stringify(results[1]));
  assert.equal(results[2].error, 'PusherBadRequest', JSON.stringify(results[2]));
  assert.equal(results[3].error, 'PusherBadStatus', JSON.stringify(results[3]));
  assert.match(results[3].message, /^404/);
});

test('Python SDK reads the 413 for a 2 MiB body instead of a reset connection', async () => {
  const results = await python([{ op: 'oversized_batch', bytes: 2 * 1024 * 1024 }, { op: 'trigger', channels: 'py-chan', event: 'e', data: 'after' }]);
  assert.equal(results[0].error, 'PusherBadStatus', JSON.stringify(results[0]).slice(0, 300));
  assert.match(results[0].message, /^413: request body is larger than the limit/);
  assert.deepEqual(results[1], { ok: {} }, 'the broker keeps serving');
});

test('Python SDK: a kept channel\'s history page through its signed GET (history set by environment)', async () => {
  const results = await python([
    { op: 'trigger', channels: ['py-hist-a'], event: 'e', data: { n: 1 } },
    { op: 'trigger', channels: ['py-hist-a'], event: 'e', data: { n: 2 } },
    { op: 'history', channel: 'py-hist-a', params: { limit: '1' } },
    { op: 'history', channel: 'py-hist-a', params: { direction: 'oldest_first' } },
    { op: 'history', channel: 'py-hist-a', params: { limit: '4' } },
    { op: 'history', channel: 'py-other' },
  ]);
  const newest = results[2].ok;
  assert.deepEqual(newest.events.map((e) => [e.position, JSON.parse(e.data).n]), [[2, 2]]);
  assert.deepEqual(results[3].ok.events.map((e) => e.position), [1, 2]);
  assert.equal(results[4].error, 'PusherBadRequest', JSON.stringify(results[4]));
  assert.ok(results[5].error, 'a channel without history is refused');
});
