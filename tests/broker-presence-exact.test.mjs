// Presence views stay exact across cluster nodes (issue: views missing members
// after simultaneous joins on several nodes), and presence webhooks are debounced
// and sent exactly once per user transition, cluster-wide.
//
// Three broker nodes on a private redis-server; stock pusher-js (Node build)
// members spread over the nodes join one presence channel at the same moment,
// then half leave at the same moment; every remaining member's view, the REST
// users list and user_count of every node, and the webhooks must agree.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker } from './lib/broker.mjs';
import { eventually } from './lib/clients.mjs';
import { assertExact as exactOn, joinAll, leave, member } from './lib/presence.mjs';
import { hookReceiver } from './lib/servers.mjs';
import { startRedis } from './lib/redis.mjs';

const RUNS = Number(process.env.PRESENCE_RUNS || 10);
const DEBOUNCE_MS = 500;

let redis;
let hooks;
let nodes = [];
const assertExact = (...args) => exactOn(nodes, ...args);

before(async () => {
  redis = await startRedis();
  hooks = await hookReceiver();
  const config = `
[cluster]
redis_url = "${redis.url}"
heartbeat_secs = 1
node_timeout_secs = 6
[webhooks]
batch_wait_ms = 10
debounce_ms = ${DEBOUNCE_MS}
[[apps]]
id = "1"
key = "app-key"
secret = "app-secret"
limits = { max_presence_members = 10000 }
webhooks = [{ url = "${hooks.url}", event_types = ["channel_occupied", "channel_vacated", "member_added", "member_removed"] }]
`;
  nodes = await Promise.all([0, 1, 2].map(() => startBroker({ config })));
  for (const n of nodes) await eventually(async () => assert.equal((await fetch(`${n.url}/ready`)).status, 200), 'node ready');
});

after(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  hooks?.close();
  await redis?.stop();
});

/** Webhooks for `name` of one kind, as user ids (each user at most once). */
function hooked(name, kind) {
  return hooks
    .of(name)
    .filter((e) => e.name === kind)
    .map((e) => e.user_id ?? e.channel)
    .sort();
}

async function assertHooks(name, { added, removed, occupied, vacated }, what) {
  await eventually(
    async () => {
      assert.deepEqual(hooked(name, 'member_added'), [...added].sort(), `${what}: member_added`);
      assert.deepEqual(hooked(name, 'member_removed'), [...removed].sort(), `${what}: member_removed`);
      assert.equal(hooked(name, "channel_occupied").length, occupied, `${what}: channel_occupied ${JSON.stringify(hooks.of(name).filter((e) => e.name.startsWith("channel")))}`);
      assert.equal(hooked(name, "channel_vacated").length, vacated, `${what}: channel_vacated ${JSON.stringify(hooks.of(name).filter((e) => e.name.startsWith("channel")))}`);
    },
    `${what}: webhooks`,
    10000,
  );
}


test(`300 members joining at once on 3 nodes, then half leaving at once: every view exact (${RUNS} runs)`, async () => {
  for (let run = 0; run < RUNS; run++) {
    const name = `presence-exact-${run}`;
    const members = await Promise.all(Array.from({ length: 300 }, (_, i) => member(nodes[i % 3], `r${run}-u${i}`)));
    try {
      await joinAll(members, name);
      const all = members.map((m) => m.id);
      await assertExact(members, name, all, `run ${run} after the joins`);
      await assertHooks(name, { added: all, removed: [], occupied: 1, vacated: 0 }, `run ${run} after the joins`);
      const leaving = members.filter((_, i) => i % 2 === 1);
      const staying = members.filter((_, i) => i % 2 === 0);
      leave(leaving);
      await assertExact(staying, name, staying.map((m) => m.id), `run ${run} after half left`);
      await assertHooks(name, { added: all, removed: leaving.map((m) => m.id), occupied: 1, vacated: 0 }, `run ${run} after half left`);
      leave(staying);
      await assertHooks(name, { added: all, removed: all, occupied: 1, vacated: 1 }, `run ${run} after all left`);
    } finally {
      leave(members);
    }
  }
});

test(`members joining on one node while others leave on the others: every view exact (${RUNS} runs)`, async () => {
  for (let run = 0; run < RUNS; run++) {
    const name = `presence-interleaved-${run}`;
    const first = await Promise.all(Array.from({ length: 150 }, (_, i) => member(nodes[1 + (i % 2)], `i${run}-a${i}`)));
    const second = await Promise.all(Array.from({ length: 100 }, (_, i) => member(nodes[0], `i${run}-b${i}`)));
    try {
      await joinAll(first, name);
      await assertExact(first, name, first.map((m) => m.id), `run ${run} before`);
      const leaving = first.filter((_, i) => i % 2 === 0);
      const staying = first.filter((_, i) => i % 2 === 1);
      // Joins on node 0 and leaves on nodes 1 and 2 at the same moment.
      const joined = joinAll(second, name);
      leave(leaving);
      await joined;
      const present = [...staying, ...second];
      await assertExact(present, name, present.map((m) => m.id), `run ${run} after the interleaving`);
      await assertHooks(
        name,
        { added: [...first, ...second].map((m) => m.id), removed: leaving.map((m) => m.id), occupied: 1, vacated: 0 },
        `run ${run} after the interleaving`,
      );
    } finally {
      leave([...first, ...second]);
    }
  }
});
