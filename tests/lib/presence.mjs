// Presence members on several broker nodes, and the check that every view of a
// presence channel agrees: each member's pusher-js member list, and every node's
// REST users list and user_count. Shared by the cluster presence suites.
import assert from 'node:assert/strict';
import { connect, eventually, sdkFor, withTimeout } from './clients.mjs';

/** One member: a pusher-js client on `node` that will join as user `id`. */
export async function member(node, id) {
  const user = { user_id: id, user_info: { name: `user ${id}` } };
  const client = await connect(node, { sdk: sdkFor(node), user });
  return { id, client, channel: null };
}

/** Every member subscribes at once; resolves when each has its subscription_succeeded. */
export async function joinAll(members, name) {
  await Promise.all(
    members.map((m) => {
      m.channel = m.client.subscribe(name);
      return withTimeout(
        new Promise((resolve, reject) => {
          m.channel.bind('pusher:subscription_succeeded', resolve);
          m.channel.bind('pusher:subscription_error', (e) => reject(new Error(`${m.id}: ${JSON.stringify(e)}`)));
        }),
        `${m.id} to join ${name}`,
        20000,
      );
    }),
  );
}

export function view(m) {
  const ids = [];
  m.channel.members.each((x) => ids.push(x.id));
  return { count: m.channel.members.count, ids: ids.sort() };
}

/** Every member's view, every node's REST users list and user_count equal `expected`. */
export async function assertExact(nodes, members, name, expected, what) {
  const want = [...expected].sort();
  await eventually(
    async () => {
      const wrong = members.filter((m) => {
        const v = view(m);
        return v.count !== want.length || v.ids.join(',') !== want.join(',');
      });
      const warnings = nodes.flatMap((n) => n.logs().split('\n').filter((l) => /WARN|ERROR/.test(l))).slice(0, 10);
      assert.equal(wrong.length, 0, `${what}: ${wrong.length} of ${members.length} views wrong (e.g. ${wrong[0]?.id} sees ${wrong[0] && view(wrong[0]).count}); broker warnings: ${warnings.join(' | ')}`);
    },
    what,
    10000,
  );
  for (const n of nodes) {
    const users = await (await rest(() => sdkFor(n).get({ path: `/channels/${name}/users` }))).json();
    assert.deepEqual(users.users.map((u) => u.id).sort(), want, `${what}: REST users on ${n.port}`);
    const info = await (await rest(() => sdkFor(n).get({ path: `/channels/${name}`, params: { info: 'user_count' } }))).json();
    assert.equal(info.user_count, want.length, `${what}: user_count on ${n.port}`);
  }
}

/**
 * A REST GET whose failure says why (the SDK's error hides its cause). A GET that
 * meets a kept-alive socket the broker closed at that very moment ("socket hang
 * up", a race of every HTTP/1.1 client) is sent once more, as browsers do.
 */
export async function rest(call) {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (e) {
      const why = `${e.error?.message ?? e.error ?? ''}`;
      if (attempt === 1 && /socket hang up|ECONNRESET/.test(why)) continue;
      e.message = `${e.message}: ${why} (${e.url ?? ''})`;
      throw e;
    }
  }
}

/** Disconnects these members (a leave, as closing a tab is). */
export const leave = (members) => {
  for (const m of members) m.client.disconnect();
};
