// Apps kept in PostgreSQL (the real local server, a fresh database per run):
// added, changed, disabled and removed without restarting the broker.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import WebSocket from 'ws';
import { startBroker } from './lib/broker.mjs';
import { eventually, expectRequestError, sdkFor } from './lib/clients.mjs';

const PG = process.env.PGURL_ADMIN || 'postgres://postgres@127.0.0.1:5432/postgres';
const db = `broker_store_${process.pid}_${crypto.randomBytes(4).toString('hex')}`;
const dbUrl = PG.replace(/\/[^/]*$/, `/${db}`);
const psql = (url, sql) => execFileSync('psql', [url, '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8' });

let broker;
before(async () => {
  psql(PG, `CREATE DATABASE "${db}"`);
  broker = await startBroker({ env: { BROKER_APP_STORE_URL: dbUrl, BROKER_APP_STORE_REFRESH_SECS: '1' } });
});
after(async () => {
  await broker?.stop();
  psql(PG, `DROP DATABASE IF EXISTS "${db}" WITH (FORCE)`);
});

/** Opens a raw connection and resolves with its first frame and close code (if closed). */
function firstFrame(key) {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://127.0.0.1:${broker.port}/app/${key}?protocol=7`);
    ws.on('error', () => {});
    ws.once('message', (m) => {
      const f = JSON.parse(m.toString());
      ws.once('close', (code) => resolve({ f, code }));
      if (f.event === 'pusher:connection_established') {
        ws.close();
      }
    });
  });
}

test('the store creates its table and /ready waits for the first load', async () => {
  await eventually(async () => assert.equal((await fetch(`${broker.url}/ready`)).status, 200), 'ready');
  assert.equal(psql(dbUrl, `SELECT count(*) FROM broker_apps`).trim(), '0');
  // No built-in app when a store is configured.
  const { f } = await firstFrame('app-key');
  assert.equal(f.data.code, 4001);
});

test('an app inserted into the table becomes usable without a restart, and follows updates and deletes', async () => {
  psql(dbUrl, `INSERT INTO broker_apps (id, key, secret, limits) VALUES ('77', 'store-key', 'store-secret', '{"max_event_data_bytes": 100}')`);
  await eventually(async () => assert.equal((await firstFrame('store-key')).f.event, 'pusher:connection_established'), 'app appears');
  const sdk = sdkFor(broker, { appId: '77', key: 'store-key', secret: 'store-secret' });
  assert.equal((await sdk.trigger('c', 'e', 'small')).status, 200);
  assert.equal((await expectRequestError(() => sdk.trigger('c', 'e', 'x'.repeat(200)))).status, 413, 'limits come from the row');

  psql(dbUrl, `UPDATE broker_apps SET secret = 'rotated' WHERE id = '77'`);
  await eventually(async () => assert.equal((await expectRequestError(() => sdk.trigger('c', 'e', 'x'))).status, 401), 'old secret refused');
  const rotated = sdkFor(broker, { appId: '77', key: 'store-key', secret: 'rotated' });
  assert.equal((await rotated.trigger('c', 'e', 'x')).status, 200);

  psql(dbUrl, `UPDATE broker_apps SET enabled = false WHERE id = '77'`);
  await eventually(async () => assert.equal((await firstFrame('store-key')).f.data.code, 4003), 'disabled');

  psql(dbUrl, `DELETE FROM broker_apps WHERE id = '77'`);
  await eventually(async () => assert.equal((await firstFrame('store-key')).f.data.code, 4001), 'removed');
  assert.equal((await expectRequestError(() => rotated.trigger('c', 'e', 'x'))).status, 404);
});

test('a bad row is skipped and the others still load', async () => {
  psql(dbUrl, `INSERT INTO broker_apps (id, key, secret, limits) VALUES ('80', 'bad-key', 's', '{"no_such_limit": 1}'), ('81', 'good-key', 's', '{}')`);
  await eventually(async () => assert.equal((await firstFrame('good-key')).f.event, 'pusher:connection_established'), 'good app');
  assert.equal((await firstFrame('bad-key')).f.data.code, 4001);
  assert.match(broker.logs(), /no_such_limit/);
});

test('a row\'s history column turns channel history on (and a bad one is skipped)', async () => {
  psql(dbUrl, `INSERT INTO broker_apps (id, key, secret, history) VALUES ('88', 'hist-key', 'hist-secret', '{"channels": ["kept-"], "max_events": 2}')`);
  psql(dbUrl, `INSERT INTO broker_apps (id, key, secret, history) VALUES ('89', 'bad-hist-key', 'x-secret', '{"channels": ["kept-"], "max_events": 0}')`);
  const sdk = sdkFor(broker, { appId: '88', key: 'hist-key', secret: 'hist-secret' });
  await eventually(async () => assert.equal((await sdk.trigger('kept-a', 'e', '1')).status, 200), 'app appears');
  for (const d of ['2', '3']) await sdk.trigger('kept-a', 'e', d);
  const page = await (await sdk.get({ path: '/channels/kept-a/history', params: { direction: 'oldest_first' } })).json();
  assert.deepEqual(page.events.map((e) => [e.position, e.data]), [[2, '2'], [3, '3']], 'max_events from the row');
  assert.equal((await expectRequestError(() => sdk.get({ path: '/channels/other/history' }))).status, 404);
  assert.equal((await firstFrame('bad-hist-key')).f.data.code, 4001, 'a row with max_events = 0 is not an app');
});

test('an unreachable store keeps /ready at 503 while /health stays up', async (t) => {
  const down = await startBroker({ env: { BROKER_APP_STORE_URL: 'postgres://postgres@127.0.0.1:1/nothing', BROKER_APP_STORE_REFRESH_SECS: '1' } });
  t.after(() => down.stop());
  const ready = await fetch(`${down.url}/ready`);
  assert.equal(ready.status, 503);
  assert.match(await ready.text(), /app store/);
  assert.equal((await fetch(`${down.url}/health`)).status, 200);
});
