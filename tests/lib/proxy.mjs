// A TCP proxy the test controls, between a client and a broker: `cut()` kills
// every open connection and refuses new ones (each is accepted and reset at
// once) until `restore()`; `retarget(port)` points later connections at another
// broker (a restarted one). WebSocket and HTTP-fallback traffic alike pass through.
import net from 'node:net';

export async function startProxy(targetPort) {
  let target = targetPort;
  let cut = false;
  const open = new Set();
  const server = net.createServer((client) => {
    if (cut) {
      client.resetAndDestroy();
      return;
    }
    const upstream = net.connect(target, '127.0.0.1');
    const pair = { client, upstream };
    open.add(pair);
    const end = () => {
      open.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    /** Connections currently passing through. */
    get connections() {
      return open.size;
    },
    /** Drops every connection (the client sees its socket reset) and refuses new ones. */
    cut() {
      cut = true;
      for (const { client, upstream } of open) {
        client.resetAndDestroy();
        upstream.destroy();
      }
      open.clear();
    },
    restore() {
      cut = false;
    },
    retarget(port) {
      target = port;
    },
    async close() {
      this.cut();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
