// Webhooks as the hosted service documents them: member_removed and
// channel_vacated wait a debounce window (3 s by default) and a return within it
// sends neither the leave nor the return, on one node and across nodes; a failing
// endpoint is retried with exponential back-off for minutes, not seconds.
import test, { after } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker } from './lib/broker.mjs';
import { connect, eventually, sdkFor, subscribe } from './lib/clients.mjs';
import { hookReceiver } from './lib/servers.mjs';
import { startRedis } from './lib/redis.mjs';

const cleanup = [];
after(async () => {
  for (const f of cleanup.reverse()) await f();
});

const PRESENCE_HOOKS = `event_types = ["channel_occupied", "channel_vacated", "member_added", "member_removed"]`;

function appConfig(hooksUrl, { cluster = '', webhooks = '' } = {}) {
  return `
${cluster}
[webhooks]
batch_wait_ms = 10
${webhooks}
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
webhooks = [{ url = "${hooksUrl}", ${PRESENCE_HOOKS} }]
`;
}

const names = (hooks, channel) => hooks.of(channel).map((e) => e.name);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** A member joins `channel` on `node` as `userId`; resolves with the client. */
async function joinAs(node, channel, userId) {
  const c = await connect(node, { sdk: sdkFor(node), user: { user_id: userId, user_info: {} } });
  await subscribe(c, channel);
  return c;
}

/** Reload, then a real leave: checks what the receiver got and when. */
async function reloadThenLeave(hooks, first, second, channel) {
  const a = await joinAs(first, channel, 'alice');
  await eventually(async () => assert.deepEqual(names(hooks, channel), ['channel_occupied', 'member_added']), 'join webhooks');
  // A page reload: the connection closes and a new one joins 0.5 s later (maybe on another node).
  a.disconnect();
  await sleep(500);
  const b = await joinAs(second, channel, 'alice');
  await sleep(4000); // past the 3 s window
  assert.deepEqual(names(hooks, channel), ['channel_occupied', 'member_added'], 'a reload sends no presence webhook');
  // A real leave: nothing before the window, both webhooks after it.
  const left = Date.now();
  b.disconnect();
  await sleep(2000);
  assert.deepEqual(names(hooks, channel), ['channel_occupied', 'member_added'], 'nothing before the window has passed');
  await eventually(
    async () => assert.deepEqual(names(hooks, channel), ['channel_occupied', 'member_added', 'member_removed', 'channel_vacated']),
    'leave webhooks after the window',
  );
  for (const { event: e, at } of hooks.arrivals.filter((a) => a.event.channel === channel).slice(2)) {
    assert.ok(at - left >= 2900, `${e.name} ${at - left} ms after the leave`);
  }
}

test('one node: a reload within the window sends no presence webhook; a real leave sends both after it', async () => {
  const hooks = await hookReceiver();
  const node = await startBroker({ config: appConfig(hooks.url) });
  cleanup.push(() => node.stop(), () => hooks.close());
  await reloadThenLeave(hooks, node, node, 'presence-reload');
});

test('two nodes: leaving on one and coming back on the other within the window sends nothing', async () => {
  const redis = await startRedis();
  const hooks = await hookReceiver();
  const cluster = `[cluster]\nredis_url = "${redis.url}"\nheartbeat_secs = 1\nnode_timeout_secs = 3`;
  const [a, b] = await Promise.all([startBroker({ config: appConfig(hooks.url, { cluster }) }), startBroker({ config: appConfig(hooks.url, { cluster }) })]);
  cleanup.push(() => redis.stop(), () => hooks.close(), () => a.stop(), () => b.stop());
  for (const n of [a, b]) await eventually(async () => assert.equal((await fetch(`${n.url}/ready`)).status, 200), 'node ready');
  await reloadThenLeave(hooks, a, b, 'presence-reload-cluster');
});

test('a receiver answering 500 for 60 s, then 200, gets every event', { timeout: 180000 }, async () => {
  const down = Date.now() + 60000;
  const hooks = await hookReceiver({ status: () => (Date.now() < down ? 500 : 200) });
  const node = await startBroker({ config: appConfig(hooks.url, { webhooks: 'max_backoff_ms = 2000\ndebounce_ms = 0' }) });
  cleanup.push(() => node.stop(), () => hooks.close());
  const expected = [];
  for (let i = 0; i < 5; i++) {
    const c = await joinAs(node, `presence-retry-${i}`, `u${i}`);
    c.disconnect();
    expected.push(`presence-retry-${i}`);
    await sleep(2000);
  }
  await sleep(Math.max(0, down - Date.now()));
  await eventually(
    async () => {
      for (const channel of expected) {
        assert.deepEqual(names(hooks, channel).sort(), ['channel_occupied', 'channel_vacated', 'member_added', 'member_removed'], channel);
      }
    },
    'every event after the receiver recovered',
    20000,
  );
  assert.ok(hooks.requests() > 20, `the broker kept retrying (${hooks.requests()} requests)`);
  const metrics = await (await fetch(`${node.url}/metrics`)).text();
  assert.match(metrics, /broker_webhook_dropped_events\{app="1"\} 0/);
});
