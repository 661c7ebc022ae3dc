// Starts the real broker binary on a free loopback port for one test file.
import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const BROKER_BIN = process.env.BROKER_BIN || path.join(ROOT, 'target/debug/broker');

export const DEFAULT_APP = { appId: '1', key: 'app-key', secret: 'app-secret' };

/** A port nobody listens on right now. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Polls `url` until it answers 200 or the deadline passes. */
export async function waitForHttp(url, { timeoutMs = 20000, child } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`process exited with ${child.exitCode} before ${url} answered`);
    try {
      const res = await fetch(url);
      if (res.ok) return;
    } catch {}
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${url}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts a broker. `env` adds environment variables (see the README's
 * configuration table); `config` is TOML text written to a temporary file.
 * With `https`, the broker serves TLS (pass BROKER_TLS_CERT/KEY in `env`) and `url` is https.
 * Returns { port, host, url, pid, logs(), stop() } plus the default app's credentials.
 */
export async function startBroker({ env = {}, config, https = false } = {}) {
  const port = await freePort();
  const fullEnv = { ...process.env, BROKER_HOST: '127.0.0.1', BROKER_PORT: String(port), RUST_LOG: process.env.RUST_LOG || 'warn', ...env };
  if (config !== undefined) {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'broker-')), 'broker.toml');
    fs.writeFileSync(file, config);
    fullEnv.BROKER_CONFIG = file;
  }
  const child = spawn(BROKER_BIN, [], { env: fullEnv, stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d) => (output += d));
  child.stderr.on('data', (d) => (output += d));
  const url = `${https ? 'https' : 'http'}://127.0.0.1:${port}`;
  try {
    await waitForHttp(`${url}/health`, { child });
  } catch (e) {
    child.kill('SIGKILL');
    throw new Error(`${e.message}\n--- broker output ---\n${output}`);
  }
  return {
    ...DEFAULT_APP,
    host: '127.0.0.1',
    port,
    url,
    pid: child.pid,
    child,
    logs: () => output,
    async stop() {
      // Already gone (exited, or killed by a test with a signal).
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(t);
    },
  };
}
