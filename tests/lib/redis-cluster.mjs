// A private Redis Cluster on loopback: three masters, each with one replica, made
// from redis-server processes and `redis-cli --cluster create`. Tests stop and
// start its nodes to show failover; it never touches the machine's Redis.
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { freePort } from './broker.mjs';

const run = promisify(execFile);

/** Whether nothing listens on `port` (the cluster bus takes port + 10000). */
function portFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A free port whose cluster-bus port (+10000) is free too. */
async function clusterPort(taken) {
  for (;;) {
    const port = await freePort();
    if (port < 55000 && !taken.has(port) && (await portFree(port + 10000))) {
      taken.add(port);
      return port;
    }
  }
}

/** Runs redis-cli against one node; resolves with its stdout. */
export async function cli(port, ...args) {
  const { stdout } = await run('redis-cli', ['-p', String(port), ...args], { encoding: 'utf8' });
  return stdout;
}

function startNode(port, dir) {
  const child = spawn(
    'redis-server',
    [
      '--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir,
      '--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${port}.conf`,
      // Short, so a failover takes seconds, not the default 15 s.
      '--cluster-node-timeout', '2000',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  return { port, child, output: () => output };
}

async function waitFor(check, what, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    try {
      if (await check()) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`redis cluster: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * Starts the cluster; resolves with
 * { url, ports, masterOf(key), kill(port), restart(port), stop() }.
 * `url` is the broker's `redis+cluster://` form naming every master as a seed.
 */
export async function startRedisCluster({ masters = 3, replicas = 1 } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'redis-cluster-'));
  const taken = new Set();
  const ports = [];
  for (let i = 0; i < masters * (1 + replicas); i++) ports.push(await clusterPort(taken));
  const nodes = new Map(ports.map((p) => [p, startNode(p, dir)]));
  const alive = async (p) => (await cli(p, 'PING')).trim() === 'PONG';
  try {
    for (const p of ports) await waitFor(() => alive(p), `node ${p} to answer`);
    await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', String(replicas), '--cluster-yes'], { encoding: 'utf8' });
    // Every node agrees the cluster is whole and knows each of the others.
    for (const p of ports) {
      await waitFor(async () => {
        const info = await cli(p, 'CLUSTER', 'INFO');
        return info.includes('cluster_state:ok') && info.includes(`cluster_known_nodes:${ports.length}`);
      }, `node ${p} to see the cluster whole`);
    }
    // A replica that has never synchronised refuses to take over, so wait until each has.
    for (const p of ports) {
      await waitFor(async () => {
        const info = await cli(p, 'INFO', 'replication');
        return info.includes('role:master') || info.includes('master_link_status:up');
      }, `node ${p} to finish its first synchronisation`);
    }
  } catch (e) {
    for (const n of nodes.values()) n.child.kill('SIGKILL');
    throw e;
  }

  /** The port of the master that serves `key`'s slot now, as a live node sees it. */
  async function masterOf(key) {
    for (const p of ports) {
      if (nodes.get(p).child.exitCode !== null || nodes.get(p).child.signalCode !== null) continue;
      try {
        const slot = Number((await cli(p, 'CLUSTER', 'KEYSLOT', key)).trim());
        for (const line of (await cli(p, 'CLUSTER', 'NODES')).split('\n')) {
          const [, addr, flags, , , , , state, ...ranges] = line.split(' ');
          if (!flags?.includes('master') || flags.includes('fail') || state !== 'connected') continue;
          for (const r of ranges) {
            const [lo, hi = lo] = r.split('-').map(Number);
            if (slot >= lo && slot <= hi) return Number(addr.split('@')[0].split(':')[1]);
          }
        }
      } catch {}
    }
    throw new Error(`no master serves ${key}`);
  }

  return {
    ports,
    url: `redis+cluster://${ports.slice(0, masters).map((p) => `127.0.0.1:${p}`).join(',')}`,
    masterOf,
    /** Kills one node with SIGKILL (a crash, not a shutdown). */
    async kill(port) {
      const { child } = nodes.get(port);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGKILL');
      await exited;
    },
    /** Waits until every live node reports the cluster whole again. */
    async healed(ms = 30000) {
      for (const p of ports) {
        const { child } = nodes.get(p);
        if (child.exitCode !== null || child.signalCode !== null) continue;
        await waitFor(async () => (await cli(p, 'CLUSTER', 'INFO')).includes('cluster_state:ok'), `node ${p} to report cluster_state:ok`, ms);
      }
    },
    async stop() {
      await Promise.all(
        [...nodes.values()].map(({ child }) => {
          if (child.exitCode !== null || child.signalCode !== null) return null;
          const exited = new Promise((r) => child.once('exit', r));
          child.kill('SIGKILL');
          return exited;
        }),
      );
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
