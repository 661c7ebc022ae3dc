// Checks that Dockerfile, .dockerignore and docker-compose.yml agree with the
// code, without a container engine: service names, ports, environment variable
// names, binary names, health check paths, COPY sources and the non-root user.
// `docker compose config` runs too when a compose client is installed.
// DOCKER_CHECK_ROOT points the checks at another copy of the repository (used
// to make sure each check can fail).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';

const ROOT = path.resolve(process.env.DOCKER_CHECK_ROOT || path.join(path.dirname(fileURLToPath(import.meta.url)), '..'));
const read = (rel) => fs.readFileSync(path.join(ROOT, rel), 'utf8');

// ---------- the workspace ----------

/** Members of the root Cargo workspace, each with its package name and binary names. */
function workspace() {
  const root = read('Cargo.toml');
  const members = root.match(/^\s*members\s*=\s*\[([^\]]*)\]/m);
  assert.ok(members, 'Cargo.toml has no [workspace] members');
  return [...members[1].matchAll(/"([^"]+)"/g)].map(([, dir]) => {
    const manifest = read(path.join(dir, 'Cargo.toml'));
    const pkg = manifest.match(/^\[package\][^[]*?^name\s*=\s*"([^"]+)"/ms)?.[1];
    const bins = [...manifest.matchAll(/^\[\[bin\]\][^[]*?^name\s*=\s*"([^"]+)"/gms)].map((m) => m[1]);
    if (fs.existsSync(path.join(ROOT, dir, 'src/main.rs')) && !manifest.includes('[[bin]]')) bins.push(pkg);
    return { dir, pkg, bins };
  });
}

/** All Rust source of one crate (its src/ tree), as one string. */
function rustSource(crateDir) {
  const out = [];
  const walk = (d) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.name.endsWith('.rs')) out.push(fs.readFileSync(p, 'utf8'));
    }
  };
  walk(path.join(ROOT, crateDir, 'src'));
  return out.join('\n');
}

/** Whether the crate reads the environment variable `name`. */
function readsEnv(src, name) {
  if (src.includes(`"${name}"`)) return true;
  // tracing-subscriber's EnvFilter::from_default_env / try_from_default_env read RUST_LOG.
  return name === 'RUST_LOG' && /\bEnvFilter::(try_)?from_default_env\b/.test(src);
}

const SRC = { broker: rustSource('broker'), 'chat-app': rustSource('chat-app') };

/** The ports the binaries listen on when nothing is configured. */
function defaultPorts() {
  const broker = SRC.broker.match(/impl Default for Config[\s\S]*?\bport:\s*(\d+)/)?.[1];
  const chat = SRC['chat-app'].match(/parse_port\("CHAT_PORT",\s*(\d+)\)/)?.[1];
  assert.ok(broker, 'cannot find the broker default port in broker/src (impl Default for Config { port: N })');
  assert.ok(chat, 'cannot find the chat-app default port in chat-app/src (parse_port("CHAT_PORT", N))');
  return { broker: Number(broker), 'chat-app': Number(chat) };
}

// ---------- Dockerfile ----------

/** Instructions of the Dockerfile grouped by stage: [{ from, name, instructions: [{ op, args }] }]. */
function dockerfile() {
  const lines = read('Dockerfile').split('\n');
  const logical = [];
  let cur = '';
  for (const raw of lines) {
    if (/^\s*#/.test(raw)) continue; // comments, also inside a continued instruction
    const line = raw.replace(/\s+$/, '');
    if (line.endsWith('\\')) {
      cur += line.slice(0, -1) + ' ';
      continue;
    }
    cur += line;
    if (cur.trim()) logical.push(cur.trim());
    cur = '';
  }
  if (cur.trim()) logical.push(cur.trim());
  const stages = [];
  for (const l of logical) {
    const [, op, args] = l.match(/^(\S+)\s*(.*)$/);
    const ins = { op: op.toUpperCase(), args };
    if (ins.op === 'FROM') {
      const m = args.match(/^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?/i);
      stages.push({ from: m[1], name: m[2] ?? null, instructions: [] });
    } else {
      assert.ok(stages.length, `Dockerfile: ${ins.op} before FROM`);
      stages.at(-1).instructions.push(ins);
    }
  }
  return stages;
}

/** A COPY instruction split into { from, chmod, sources, dest }. */
function parseCopy(args) {
  const words = args.trim().startsWith('[') ? JSON.parse(args) : args.split(/\s+/);
  const flags = {};
  while (words[0]?.startsWith('--')) {
    const [k, v] = words.shift().slice(2).split('=');
    flags[k] = v;
  }
  return { from: flags.from ?? null, chmod: flags.chmod ?? null, sources: words.slice(0, -1), dest: words.at(-1) };
}

/** ENV instruction → [[name, value]] (the `ENV a=b c=d` form). */
function parseEnv(args) {
  return [...args.matchAll(/([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S*)/g)].map(([, k, v]) => [k, v.replace(/^"|"$/g, '')]);
}

function finalStage() {
  return dockerfile().at(-1);
}

/** Binaries the final stage installs into /usr/local/bin. */
function installedCommands() {
  const names = new Set();
  for (const ins of finalStage().instructions.filter((i) => i.op === 'COPY')) {
    const c = parseCopy(ins.args);
    if (c.dest === '/usr/local/bin/' || c.dest === '/usr/local/bin') c.sources.forEach((s) => names.add(path.basename(s)));
    else if (c.dest.startsWith('/usr/local/bin/')) names.add(path.basename(c.dest));
  }
  return names;
}

// ---------- .dockerignore ----------

function globToRegExp(glob) {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const ch = glob[i];
    if (ch === '*' && glob[i + 1] === '*') {
      i++;
      if (glob[i + 1] === '/') {
        re += '(?:.*/)?';
        i++;
      } else re += '.*';
    } else if (ch === '*') re += '[^/]*';
    else if (ch === '?') re += '[^/]';
    else re += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Whether a repository path is sent to the builder (last matching pattern wins; a pattern also covers what is under a match). */
function inBuildContext(rel) {
  const file = path.join(ROOT, '.dockerignore');
  if (!fs.existsSync(file)) return true;
  const patterns = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => {
      const negate = l.startsWith('!');
      const p = path.posix.normalize((negate ? l.slice(1) : l).trim()).replace(/^\/+|\/+$/g, '');
      return { negate, re: globToRegExp(p) };
    });
  const parts = path.posix.normalize(rel).replace(/\/+$/, '').split('/');
  const prefixes = parts.map((_, i) => parts.slice(0, i + 1).join('/'));
  let included = true;
  for (const { negate, re } of patterns) if (prefixes.some((p) => re.test(p))) included = negate;
  return included;
}

// ---------- docker-compose.yml ----------

const compose = () => YAML.parse(read('docker-compose.yml'));

/** A service's environment as an object (map or `- K=V` list form). */
function envOf(service) {
  const e = service.environment ?? {};
  if (!Array.isArray(e)) return Object.fromEntries(Object.entries(e).map(([k, v]) => [k, v === null ? '' : String(v)]));
  return Object.fromEntries(e.map((s) => [s.split('=')[0], s.includes('=') ? s.slice(s.indexOf('=') + 1) : '']));
}

/** `ports:` entries as { host, container } numbers (short syntax "H:C" or long syntax). */
function portsOf(service) {
  return (service.ports ?? []).map((p) => {
    if (typeof p === 'object') return { host: Number(p.published), container: Number(p.target) };
    const parts = String(p).split('/')[0].split(':');
    return { host: Number(parts.at(-2) ?? parts.at(-1)), container: Number(parts.at(-1)) };
  });
}

const asList = (cmd) => (Array.isArray(cmd) ? cmd.map(String) : String(cmd).split(/\s+/));

/** The port and path probed by `healthcheck PORT PATH` in a compose healthcheck. */
function probeOf(service) {
  const t = asList(service.healthcheck?.test ?? []);
  const i = t.indexOf('healthcheck');
  assert.ok(i >= 0, `healthcheck.test should run the image's healthcheck script, got ${JSON.stringify(t)}`);
  return { port: Number(t[i + 1]), path: t[i + 2] ?? '/health' };
}

const APP_SERVICES = ['broker', 'chat-app'];

/** A compose value as compose would see it with nothing set in the shell or .env: `${X:-d}` → d, `${X}` → ''. */
function interpolateUnset(value) {
  return String(value).replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}/g, (_, _name, dflt) => dflt ?? '');
}

/** `volumes:` entries of a service as { source, target, readOnly } (short syntax). */
function volumesOf(service) {
  return (service.volumes ?? []).map((v) => {
    if (typeof v === 'object') return { source: v.source, target: v.target, readOnly: !!v.read_only };
    const [source, target, mode] = String(v).split(':');
    return { source, target, readOnly: mode === 'ro' };
  });
}

/** Environment variables holding secrets, per service, that must never default to a published value. */
const SECRET_VARS = { broker: ['BROKER_APP_SECRET'], 'chat-app': ['PUSHER_APP_SECRET', 'SESSION_KEY'] };
const PUBLISHED_SECRET = 'app-secret';

// ---------- the checks ----------

test('compose has the expected services, images and health checks', () => {
  const c = compose();
  assert.deepEqual(Object.keys(c.services).sort(), ['broker', 'chat-app', 'postgres', 'redis', 'secrets']);
  assert.match(c.services.postgres.image, /^postgres:16\b/);
  assert.match(c.services.redis.image, /^redis:7\b/);
  assert.ok(asList(c.services.postgres.healthcheck?.test ?? []).includes('pg_isready'), 'postgres health check uses pg_isready');
  assert.deepEqual(asList(c.services.redis.healthcheck?.test ?? []).slice(-2), ['redis-cli', 'ping']);
  const images = APP_SERVICES.map((s) => c.services[s].image);
  assert.equal(new Set(images).size, 1, `broker and chat-app should run the same image, got ${images}`);
  for (const s of APP_SERVICES) {
    const build = c.services[s].build;
    const context = typeof build === 'object' ? build.context : build;
    assert.ok(context !== undefined, `${s}: build: . so that compose builds the image`);
    assert.equal(path.resolve(ROOT, context), ROOT, `${s}: builds from the repository root`);
    if (typeof build === 'object' && build.dockerfile) assert.equal(build.dockerfile, 'Dockerfile');
  }
});

test('compose commands and the Dockerfile name binaries of the workspace', () => {
  const ws = workspace();
  const pkgs = new Map(ws.map((m) => [m.pkg, m]));
  const build = dockerfile()
    .flatMap((s) => s.instructions)
    .find((i) => i.op === 'RUN' && /cargo build/.test(i.args));
  assert.ok(build, 'Dockerfile runs cargo build');
  const cargo = build.args.match(/cargo build[^&;|]*/)[0];
  const built = [...cargo.matchAll(/\s(?:-p|--package)[\s=]+(\S+)/g)].map((m) => m[1]);
  assert.deepEqual(built.sort(), [...APP_SERVICES].sort(), 'cargo build -p broker -p chat-app');
  const bins = new Set();
  for (const p of built) {
    assert.ok(pkgs.has(p), `cargo build -p ${p}: no workspace package named ${p} (have ${[...pkgs.keys()]})`);
    pkgs.get(p).bins.forEach((b) => bins.add(b));
  }
  const copied = [...build.args.matchAll(/target\/release\/([A-Za-z0-9_-]+)/g)].map((m) => m[1]);
  assert.ok(copied.length, 'the build step copies binaries out of target/release');
  for (const b of copied) assert.ok(bins.has(b), `target/release/${b} is not a binary of ${built}`);

  const installed = installedCommands();
  for (const b of copied) assert.ok(installed.has(b), `${b} is built but not copied to /usr/local/bin`);
  const cmd = finalStage().instructions.findLast((i) => i.op === 'CMD');
  if (cmd) assert.ok(installed.has(asList(JSON.parse(cmd.args))[0]), `CMD ${cmd.args} is not installed`);
  const c = compose();
  for (const s of APP_SERVICES) {
    const command = asList(c.services[s].command ?? [])[0];
    assert.equal(command, s, `service ${s} should run the ${s} binary`);
    assert.ok(installed.has(command) && bins.has(command), `service ${s}: command ${command} is not a binary in the image`);
  }
});

test('every environment variable set in compose or the Dockerfile is read by the code', () => {
  const c = compose();
  for (const s of APP_SERVICES) {
    for (const name of Object.keys(envOf(c.services[s]))) {
      assert.ok(readsEnv(SRC[s], name), `service ${s} sets ${name}, which ${s}/src never reads`);
    }
  }
  for (const ins of finalStage().instructions.filter((i) => i.op === 'ENV')) {
    for (const [name] of parseEnv(ins.args)) {
      assert.ok(APP_SERVICES.some((s) => readsEnv(SRC[s], name)), `Dockerfile sets ENV ${name}, which neither binary reads`);
    }
  }
});

test('ports and addresses: published, exposed, probed and dialled ports match the binaries', () => {
  const c = compose();
  const defaults = defaultPorts();
  const portVar = { broker: 'BROKER_PORT', 'chat-app': 'CHAT_PORT' };
  const hostVar = { broker: 'BROKER_HOST', 'chat-app': 'CHAT_HOST' };
  const expose = finalStage()
    .instructions.filter((i) => i.op === 'EXPOSE')
    .flatMap((i) => i.args.split(/\s+/).map((p) => Number(p.split('/')[0])));
  const listen = {};
  for (const s of APP_SERVICES) {
    const env = envOf(c.services[s]);
    listen[s] = env[portVar[s]] ? Number(env[portVar[s]]) : defaults[s];
    assert.ok(expose.includes(defaults[s]), `Dockerfile EXPOSE ${expose} lacks ${s}'s default port ${defaults[s]}`);
    const ports = portsOf(c.services[s]);
    assert.ok(ports.some((p) => p.container === listen[s]), `${s} listens on ${listen[s]} but publishes ${JSON.stringify(ports)}`);
    assert.equal(probeOf(c.services[s]).port, listen[s], `${s} health check probes another port than ${listen[s]}`);
    const bindHost = env[hostVar[s]] ?? parseEnv(finalStage().instructions.filter((i) => i.op === 'ENV').map((i) => i.args).join(' ')).find(([k]) => k === hostVar[s])?.[1];
    assert.equal(bindHost, '0.0.0.0', `${s} must listen on 0.0.0.0 (${hostVar[s]}) to be reachable from other containers`);
  }
  const chat = envOf(c.services['chat-app']);
  const url = new URL(chat.PUSHER_URL);
  assert.equal(url.hostname, 'broker', 'PUSHER_URL points at the broker service');
  assert.equal(Number(url.port || 80), listen.broker, 'PUSHER_URL uses the port the broker listens on');
  const published = portsOf(c.services.broker).find((p) => p.container === listen.broker).host;
  assert.equal(Number(chat.PUSHER_WS_PORT), published, 'the browser connects to the broker port published on the host');
  assert.ok(['localhost', '127.0.0.1'].includes(chat.PUSHER_WS_HOST), `PUSHER_WS_HOST ${chat.PUSHER_WS_HOST} should be reachable from the host's browser`);
  assert.equal(chat.COOKIE_SECURE, 'false', 'compose serves plain http, so COOKIE_SECURE=false');
});

test('chat-app reaches PostgreSQL with the credentials the postgres service creates', () => {
  const c = compose();
  const pg = envOf(c.services.postgres);
  const db = new URL(envOf(c.services['chat-app']).DATABASE_URL);
  assert.equal(db.protocol, 'postgres:');
  assert.equal(db.hostname, 'postgres', 'DATABASE_URL host is the postgres service');
  assert.equal(Number(db.port || 5432), 5432);
  assert.equal(decodeURIComponent(db.username), pg.POSTGRES_USER ?? 'postgres');
  assert.equal(decodeURIComponent(db.password), pg.POSTGRES_PASSWORD);
  assert.equal(db.pathname.slice(1), pg.POSTGRES_DB ?? pg.POSTGRES_USER ?? 'postgres', 'the database exists (POSTGRES_DB)');
});

test('the broker reaches Redis through the redis service', () => {
  const c = compose();
  const env = envOf(c.services.broker);
  if (!env.BROKER_REDIS_URL) return;
  const url = new URL(env.BROKER_REDIS_URL);
  assert.equal(url.protocol, 'redis:');
  assert.match(c.services[url.hostname]?.image ?? '', /^redis:/, `BROKER_REDIS_URL host ${url.hostname} is not a redis service`);
  assert.equal(Number(url.port || 6379), 6379);
  assert.equal(c.services.broker.depends_on?.[url.hostname]?.condition, 'service_healthy', 'the broker waits for Redis to be healthy');
});

test('broker and chat-app share the app credentials', () => {
  const c = compose();
  const b = envOf(c.services.broker);
  const a = envOf(c.services['chat-app']);
  for (const k of ['ID', 'KEY', 'SECRET']) {
    assert.equal(b[`BROKER_APP_${k}`], a[`PUSHER_APP_${k}`], `BROKER_APP_${k} and PUSHER_APP_${k} differ`);
  }
});

test('the broker keeps history for every chat channel, in compose and in scripts/start alike', () => {
  // The chat's own channel names, as chat-app makes them (models.rs).
  const everyone = SRC['chat-app'].match(/EVERYONE_CHANNEL: &str = "([^"]+)"/)?.[1];
  const conversation = SRC['chat-app'].match(/format!\("(private-conversation-)\{id\}/)?.[1];
  assert.ok(everyone && conversation, 'chat-app channel names not found in its source');
  const covers = (list, name) => list.split(',').map((p) => p.trim()).some((p) => p === '*' || (p !== '' && name.startsWith(p)));
  const composed = interpolateUnset(envOf(compose().services.broker).BROKER_APP_HISTORY_CHANNELS ?? '');
  const script = fs.readFileSync(path.join(ROOT, 'scripts/start'), 'utf8');
  const started = script.match(/BROKER_APP_HISTORY_CHANNELS="\$\{BROKER_APP_HISTORY_CHANNELS:-([^}]*)\}"/)?.[1] ?? '';
  for (const [where, list] of [['docker-compose.yml', composed], ['scripts/start', started]]) {
    for (const name of [everyone, `${conversation}7-0`]) assert.ok(covers(list, name), `${where}: the broker does not keep ${name} (history channels: "${list}")`);
  }
  assert.equal(composed, started, 'compose and scripts/start keep different channels');
});

test('chat-app starts only after healthy postgres and broker', () => {
  const c = compose();
  const deps = c.services['chat-app'].depends_on;
  assert.ok(deps && !Array.isArray(deps), 'chat-app depends_on uses conditions');
  for (const s of ['postgres', 'broker']) {
    assert.equal(deps[s]?.condition, 'service_healthy', `chat-app waits for ${s} to be healthy`);
    assert.ok(c.services[s].healthcheck, `${s} has a health check`);
  }
  for (const s of Object.keys(deps)) assert.ok(c.services[s], `depends_on names unknown service ${s}`);
});

test('health check paths are routed by the binaries and the probe is installed', () => {
  const c = compose();
  assert.ok(installedCommands().has('healthcheck'), 'the image installs the healthcheck script');
  for (const s of APP_SERVICES) {
    const { path: p } = probeOf(c.services[s]);
    assert.ok(SRC[s].includes(`"${p}"`), `${s} health check requests ${p}, which ${s}/src does not route`);
  }
});

test('Dockerfile COPY sources exist and are in the build context', () => {
  for (const stage of dockerfile()) {
    for (const ins of stage.instructions.filter((i) => i.op === 'COPY' || i.op === 'ADD')) {
      const c = parseCopy(ins.args);
      if (c.from) continue;
      for (const src of c.sources) {
        if (src === '.') continue;
        assert.ok(fs.existsSync(path.join(ROOT, src)), `COPY ${src}: no such file in the repository`);
        assert.ok(inBuildContext(src), `COPY ${src}: excluded by .dockerignore`);
      }
    }
  }
  // The builder copies the whole context: cargo needs every member, the lock file and chat-app's embedded files.
  const needed = ['Cargo.toml', 'Cargo.lock', ...workspace().map((m) => `${m.dir}/Cargo.toml`), ...workspace().map((m) => `${m.dir}/src`)];
  for (const m of SRC['chat-app'].matchAll(/embed_migrations!\("\.\.\/([^"]+)"\)/g)) needed.push(m[1]);
  // Files chat-app builds in (the page's recovery helper), named from the workspace root: paths climb out of chat-app/.
  for (const m of SRC['chat-app'].matchAll(/include_(?:str|bytes)!\("(?:\.\.\/)+([^"]+)"\)/g)) needed.push(m[1]);
  for (const rel of needed) assert.ok(inBuildContext(rel), `${rel} is needed by cargo build but excluded by .dockerignore`);
  const junk = ['target', 'node_modules', '.git', '.venv', 'test-artifacts', ...workspace().map((m) => `${m.dir}/target`)];
  for (const rel of junk) assert.ok(!inBuildContext(rel), `${rel} should stay out of the build context`);
});

test('the chat page assets land where chat-app looks for them', () => {
  const final = finalStage();
  const env = Object.fromEntries(parseEnv(final.instructions.filter((i) => i.op === 'ENV').map((i) => i.args).join(' ')));
  const copies = final.instructions.filter((i) => i.op === 'COPY').map((i) => parseCopy(i.args));
  const web = copies.find((c) => !c.from && c.sources.includes('web'));
  assert.ok(web, 'the final stage copies web/');
  assert.equal(path.posix.normalize(web.dest), path.posix.normalize(env.CHAT_WEB_DIR ?? ''), 'CHAT_WEB_DIR is where web/ is copied');

  // chat-app serves <CHAT_NODE_MODULES>/pusher-js/dist/web/<file>.
  const served = [...SRC['chat-app'].matchAll(/"(pusher-js\/dist\/web\/[^"]+)"/g)].map((m) => m[1]);
  assert.ok(served.length, 'chat-app/src names a pusher-js/dist/web file');
  const js = copies.find((c) => c.from && c.sources.some((s) => s.includes('node_modules/pusher-js')));
  assert.ok(js, 'the final stage copies pusher-js from the npm stage');
  for (const file of served) {
    const inImage = path.posix.join(env.CHAT_NODE_MODULES ?? '', file);
    assert.ok(inImage.startsWith(path.posix.normalize(js.dest) + '/'), `${inImage} is not under the copied ${js.dest}`);
    const fromNpm = js.sources[0].replace(/^.*?node_modules\//, 'node_modules/');
    const local = path.join(ROOT, fromNpm, path.posix.relative(path.posix.normalize(js.dest), inImage));
    if (fs.existsSync(path.join(ROOT, 'node_modules/pusher-js'))) assert.ok(fs.existsSync(local), `${local} does not exist after npm ci`);
  }
  const npmStage = dockerfile().find((s) => s.name === js.from);
  assert.ok(npmStage, `COPY --from=${js.from}: no such stage`);
  assert.ok(npmStage.instructions.some((i) => i.op === 'RUN' && /npm ci\b.*--omit=dev/.test(i.args)), 'the npm stage runs npm ci --omit=dev');
  const pkg = JSON.parse(read('package.json'));
  assert.ok(pkg.dependencies?.['pusher-js'], 'pusher-js must be a runtime dependency, or npm ci --omit=dev skips it');
});

test('images: rust builder, slim runtime with CA certificates, non-root user', () => {
  const stages = dockerfile();
  const builder = stages.find((s) => s.instructions.some((i) => /cargo build/.test(i.args)));
  assert.match(builder.from, /^rust:1-bookworm$/);
  const final = stages.at(-1);
  assert.equal(final.from, 'debian:bookworm-slim');
  assert.ok(final.instructions.some((i) => i.op === 'RUN' && /apt-get install[^&]*ca-certificates/.test(i.args)), 'installs ca-certificates');
  const user = final.instructions.findLast((i) => i.op === 'USER');
  assert.ok(user, 'the final stage sets USER');
  const [name] = user.args.trim().split(':');
  assert.notEqual(name, 'root');
  assert.notEqual(name, '0');
  if (/^\d+$/.test(name)) {
    const created = final.instructions.some((i) => i.op === 'RUN' && new RegExp(`useradd\\b.*--uid\\s+${name}\\b`).test(i.args));
    assert.ok(created, `USER ${name}: no useradd --uid ${name} in the final stage`);
  }
  assert.ok(final.instructions.findIndex((i) => i === user) > final.instructions.findLastIndex((i) => i.op === 'RUN'), 'USER comes after the last RUN');
});

test('the healthcheck script tells a healthy broker from a missing route and a closed port', async (t) => {
  const { BROKER_BIN, startBroker, freePort } = await import('./lib/broker.mjs');
  if (!fs.existsSync(BROKER_BIN)) return t.skip(`no broker binary at ${BROKER_BIN} (cargo build first)`);
  if (spawnSync('bash', ['-c', 'true']).status !== 0) return t.skip('no bash');
  const script = path.join(ROOT, 'docker/healthcheck');
  const run = (...args) =>
    new Promise((resolve) => {
      const child = spawn('bash', [script, ...args.map(String)], { stdio: 'ignore' });
      child.on('exit', (code) => resolve(code));
    });
  const broker = await startBroker();
  try {
    assert.equal(await run(broker.port, '/health'), 0, 'healthy broker');
    assert.notEqual(await run(broker.port, '/no-such-route'), 0, 'a 404 is unhealthy');
  } finally {
    await broker.stop();
  }
  assert.notEqual(await run(await freePort(), '/health'), 0, 'a closed port is unhealthy');
});

test('docker compose config accepts the file', (t) => {
  const candidates = [
    ['docker', ['compose']],
    ['docker-compose', []],
  ];
  const client = candidates.find(([bin, pre]) => spawnSync(bin, [...pre, 'version'], { stdio: 'ignore' }).status === 0);
  if (!client) return t.skip('no docker compose client installed (the docker CLI here has no compose plugin)');
  const [bin, pre] = client;
  const r = spawnSync(bin, [...pre, '-f', path.join(ROOT, 'docker-compose.yml'), 'config', '-q'], { cwd: ROOT, encoding: 'utf8' });
  assert.equal(r.status, 0, `${bin} ${pre.join(' ')} config failed:\n${r.stderr}`);
});

// ---------- secrets: generated on the first run, never the published default ----------

/** Where `init-secrets` writes and `with-secrets` reads, from the scripts and compose. */
function secretsLayout() {
  const c = compose();
  const init = c.services.secrets;
  assert.ok(init, 'compose has a secrets service that generates the secrets');
  const cmd = asList(init.command ?? []);
  assert.equal(cmd[0], 'init-secrets', 'the secrets service runs init-secrets');
  const dir = cmd[1];
  assert.ok(dir, 'init-secrets is given the directory to write');
  const initScript = read('docker/init-secrets');
  const name = initScript.match(/file="\$dir\/([^"]+)"/)?.[1];
  assert.ok(name, 'docker/init-secrets writes "$dir/<file>"');
  const readPath = read('docker/with-secrets').match(/SECRETS_FILE:-([^}]+)\}/)?.[1];
  assert.ok(readPath, 'docker/with-secrets names the file it reads (SECRETS_FILE default)');
  return { c, dir, file: path.posix.join(dir, name), readPath };
}

test('compose generates the secrets once and the broker and chat read the same file', () => {
  const { c, dir, file, readPath } = secretsLayout();
  assert.equal(readPath, file, 'with-secrets reads the file init-secrets writes');
  const initVolume = volumesOf(c.services.secrets).find((v) => v.target === dir);
  assert.ok(initVolume, `the secrets service mounts a volume at ${dir}`);
  assert.ok(c.volumes && initVolume.source in c.volumes, `${initVolume.source} is a named volume, so the secrets outlive the containers`);
  const installed = installedCommands();
  for (const script of ['init-secrets', 'with-secrets']) assert.ok(installed.has(script), `the image installs ${script}`);
  for (const s of APP_SERVICES) {
    const svc = c.services[s];
    assert.deepEqual(asList(svc.entrypoint ?? []), ['with-secrets'], `${s} starts through with-secrets`);
    const v = volumesOf(svc).find((m) => m.source === initVolume.source);
    assert.ok(v, `${s} mounts the ${initVolume.source} volume`);
    assert.equal(v.target, dir, `${s} mounts it where with-secrets looks`);
    assert.ok(v.readOnly, `${s} needs the secrets read-only`);
    assert.equal(svc.depends_on?.secrets?.condition, 'service_completed_successfully', `${s} starts after the secrets exist`);
  }
  // A new named volume takes the image directory's owner: the non-root user must own it to write there.
  const user = finalStage().instructions.findLast((i) => i.op === 'USER').args.trim().split(':')[0];
  const made = finalStage().instructions.some(
    (i) => i.op === 'RUN' && new RegExp(`install -d -o ${user}\\b[^&]*${dir.replace(/[/.]/g, '\\$&')}`).test(i.args),
  );
  assert.ok(made, `the image creates ${dir} owned by ${user}`);
});

test('compose never falls back to the published secret or a demo login', () => {
  const c = compose();
  for (const [s, names] of Object.entries(SECRET_VARS)) {
    const env = envOf(c.services[s]);
    for (const n of names) {
      assert.ok(n in env, `${s} declares ${n} (empty) so with-secrets fills it`);
      const unset = interpolateUnset(env[n]);
      assert.equal(unset, '', `${s}: ${n} must be empty unless the user sets it (got ${JSON.stringify(unset)} by default)`);
      assert.ok(read('docker/with-secrets').includes(n), `with-secrets fills ${n}`);
    }
  }
  const demo = envOf(c.services['chat-app']).CHAT_DEMO_PASSWORD;
  if (demo !== undefined) assert.equal(interpolateUnset(demo), '', 'CHAT_DEMO_PASSWORD only when the user sets it');
  assert.ok(!read('docker-compose.yml').includes(PUBLISHED_SECRET), `docker-compose.yml mentions ${PUBLISHED_SECRET}`);
});

test('the secrets scripts: generated once, shared by broker and chat, refused when missing', (t) => {
  if (spawnSync('bash', ['-c', 'true']).status !== 0) return t.skip('no bash');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'secrets-'));
  try {
    const { c, file } = secretsLayout();
    const local = path.join(dir, path.posix.basename(file));
    const init = () => spawnSync('bash', [path.join(ROOT, 'docker/init-secrets'), dir], { encoding: 'utf8' });
    assert.equal(init().status, 0);
    const first = fs.readFileSync(local, 'utf8');
    assert.equal(fs.statSync(local).mode & 0o077, 0, 'the secrets file is readable by its owner only');
    assert.equal(init().status, 0);
    assert.equal(fs.readFileSync(local, 'utf8'), first, 'a second run keeps the secrets');

    // Each service's environment as compose gives it with nothing set by the user, run through with-secrets.
    const seen = {};
    for (const s of APP_SERVICES) {
      const env = Object.fromEntries(Object.entries(envOf(c.services[s])).map(([k, v]) => [k, interpolateUnset(v)]));
      const r = spawnSync('bash', [path.join(ROOT, 'docker/with-secrets'), 'env'], {
        env: { PATH: process.env.PATH, ...env, SECRETS_FILE: local },
        encoding: 'utf8',
      });
      assert.equal(r.status, 0, r.stderr);
      seen[s] = Object.fromEntries(r.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
      const missing = spawnSync('bash', [path.join(ROOT, 'docker/with-secrets'), 'true'], {
        env: { PATH: process.env.PATH, ...env, SECRETS_FILE: path.join(dir, 'nope') },
        encoding: 'utf8',
      });
      assert.notEqual(missing.status, 0, `${s} refuses to start without the secrets`);
      assert.match(missing.stderr, /PUSHER_APP_SECRET/, 'the refusal names the setting');
    }
    const secret = seen.broker.BROKER_APP_SECRET;
    assert.ok(secret && secret !== PUBLISHED_SECRET && secret.length >= 32, `a generated app secret, got ${JSON.stringify(secret)}`);
    assert.equal(seen['chat-app'].PUSHER_APP_SECRET, secret, 'the chat signs with the secret the broker serves');
    assert.ok(Buffer.byteLength(seen['chat-app'].SESSION_KEY ?? '') >= 64, 'SESSION_KEY is the 64+ bytes the chat needs');
    assert.ok(!('CHAT_DEMO_PASSWORD' in seen['chat-app']), 'no demo password reaches the chat unless the user set one');

    const mine = spawnSync('bash', [path.join(ROOT, 'docker/with-secrets'), 'env'], {
      env: { PATH: process.env.PATH, PUSHER_APP_SECRET: 'chosen-by-the-user', SESSION_KEY: '', SECRETS_FILE: local },
      encoding: 'utf8',
    });
    assert.match(mine.stdout, /^PUSHER_APP_SECRET=chosen-by-the-user$/m, "the user's own secret wins");
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
