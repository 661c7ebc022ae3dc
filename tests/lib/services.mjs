// Private dependencies for the fault tests: a PostgreSQL cluster made with
// initdb in a temporary directory on a free loopback port, so a test can stop
// and restart it without touching the machine's own service (for Redis see
// ./redis.mjs); and a small health-checking TCP balancer in front of broker nodes.
import { execFileSync, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './broker.mjs';

/** The newest PostgreSQL server binaries installed (Debian layout), or those on PATH. */
function pgBinDir() {
  const base = '/usr/lib/postgresql';
  const versions = fs.existsSync(base) ? fs.readdirSync(base).filter((v) => fs.existsSync(path.join(base, v, 'bin/pg_ctl'))) : [];
  versions.sort((a, b) => Number(b) - Number(a));
  if (versions.length) return path.join(base, versions[0], 'bin');
  return path.dirname(execFileSync('which', ['pg_ctl'], { encoding: 'utf8' }).trim());
}

/** PostgreSQL refuses to run as root: run its tools as the `postgres` user when we are root. */
function pgRun(bin, args) {
  const root = process.getuid?.() === 0;
  const [cmd, argv] = root ? ['runuser', ['-u', 'postgres', '--', bin, ...args]] : [bin, args];
  const r = spawnSync(cmd, argv, { encoding: 'utf8', cwd: os.tmpdir() });
  if (r.status !== 0) throw new Error(`${path.basename(bin)} ${args.join(' ')} failed: ${r.stderr || r.stdout || r.error}`);
  return r.stdout;
}

/**
 * A PostgreSQL cluster of our own: `initdb` into a temporary directory, trust
 * authentication for user `postgres`, listening on 127.0.0.1 at a free port.
 * Returns { port, url(db), stop(mode), start(), destroy() }.
 */
export async function startPostgres() {
  const bin = pgBinDir();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'faults-pg-'));
  const data = path.join(dir, 'data');
  if (process.getuid?.() === 0) execFileSync('chown', ['postgres:', dir]);
  pgRun(path.join(bin, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const port = await freePort();
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off`;
  const pgCtl = (...args) => pgRun(path.join(bin, 'pg_ctl'), ['-D', data, ...args]);
  const pg = {
    port,
    url: (db = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${db}`,
    start: () => pgCtl('-o', opts, '-l', path.join(dir, 'log'), '-w', '-t', '30', 'start'),
    /** `fast` rolls back open transactions and closes sessions; `immediate` is a crash (recovery on start). */
    stop: (mode = 'fast') => pgCtl('-m', mode, '-w', '-t', '30', 'stop'),
    psql(sql, db = 'postgres') {
      const r = spawnSync('psql', [pg.url(db), '-v', 'ON_ERROR_STOP=1', '-qAtc', sql], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`psql failed: ${r.stderr || r.error}`);
      return r.stdout.trim();
    },
    destroy() {
      try {
        pg.stop('immediate');
      } catch {}
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
  pg.start();
  return pg;
}

/**
 * A TCP load balancer on a free port, like a real one with health checks: it
 * polls each backend's `GET /ready` every 100 ms and sends each new connection
 * to the next ready backend (round robin), falling back to any backend that
 * accepts TCP when none is known ready. Returns { port, backends, close() };
 * `backends` (ports) may be changed, e.g. for a node restarted on a new port.
 */
export async function balancer(backendPorts) {
  let next = 0;
  const sockets = new Set();
  const ready = new Map(); // port -> last /ready answered 200
  let checking = true;
  const checker = (async () => {
    while (checking) {
      await Promise.all(
        backendPorts.map(async (port) => {
          const ok = await fetch(`http://127.0.0.1:${port}/ready`, { signal: AbortSignal.timeout(1000) }).then((r) => r.ok, () => false);
          ready.set(port, ok);
        }),
      );
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  const server = net.createServer((client) => {
    sockets.add(client);
    client.on('close', () => sockets.delete(client));
    client.on('error', () => {});
    client.pause();
    const healthy = backendPorts.filter((p) => ready.get(p));
    const candidates = healthy.length ? healthy : [...backendPorts];
    const tryBackend = (attempt) => {
      if (attempt >= candidates.length) return client.destroy();
      const port = candidates[next++ % candidates.length];
      const upstream = net.connect(port, '127.0.0.1');
      upstream.once('error', () => tryBackend(attempt + 1));
      upstream.once('connect', () => {
        upstream.removeAllListeners('error');
        sockets.add(upstream);
        upstream.on('close', () => (sockets.delete(upstream), client.destroy()));
        upstream.on('error', () => client.destroy());
        client.on('close', () => upstream.destroy());
        client.pipe(upstream);
        upstream.pipe(client);
        client.resume();
      });
    };
    tryBackend(0);
  });
  const port = await freePort();
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return {
    port,
    /** The backend ports; change it to move the balancer (a restarted node on a new port). */
    backends: backendPorts,
    async close() {
      checking = false;
      await checker;
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
