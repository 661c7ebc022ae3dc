// The broker's debug console. Everything it shows comes from /console/api/*
// (same origin, authorized by the login cookie); text from the broker is only
// ever put in the page with textContent, never as HTML.
'use strict';

/** Log entries kept in the page; older ones are forgotten. */
const MAX_LOG = 1000;
/** Rows drawn at once (newest first). */
const MAX_ROWS = 300;

const $ = (id) => document.getElementById(id);

/** Names this page's feed requests: opening the feed for another app takes over the page's own
 * viewer place on the broker instead of needing a second one. New with each page load, so a
 * duplicated tab never fights over one place (a reloaded page's old feed is closed with it). */
// (getRandomValues, not randomUUID: the latter needs a secure context, and the console may be served
// over plain HTTP on a private address.)
const PAGE_ID = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');

const view = {
  app: null, // { id, key }
  feed: null, // EventSource
  log: [], // entries, oldest first, at most MAX_LOG
  paused: false,
  arrivedWhilePaused: 0,
  dropped: 0, // lost because this page fell behind
  forgotten: 0, // pushed out of the page's bounded buffer
  skippedAtOpen: null, // the broker's skipped counter when the page opened
  skippedNow: 0,
  eventsPerSecond: 0,
  selectedPresence: null,
  renderQueued: false,
};

async function api(path, options = {}) {
  const res = await fetch(`/console/api${path}`, { credentials: 'same-origin', ...options });
  if (res.status === 401) {
    setFeedState('closed', 'logged out: reload to log in');
    throw new Error('unauthorized');
  }
  return res;
}

function setFeedState(state, text) {
  const el = $('feed-state');
  el.dataset.state = state;
  el.textContent = text;
}

// ---- apps -------------------------------------------------------------------

async function loadApps() {
  const apps = await (await api('/apps')).json();
  const select = $('app');
  select.replaceChildren(
    ...apps.map((a) => {
      const o = document.createElement('option');
      o.value = a.id;
      o.textContent = `${a.id} (key ${a.key})${a.enabled ? '' : ' — disabled'}`;
      return o;
    }),
  );
  select.onchange = () => chooseApp(apps.find((a) => a.id === select.value));
  if (apps.length) chooseApp(apps[0]);
}

function chooseApp(app) {
  view.app = app;
  view.log = [];
  view.dropped = 0;
  view.forgotten = 0;
  view.selectedPresence = null;
  $('members-panel').hidden = true;
  openFeed();
  refreshStats();
  refreshChannels();
  queueRender();
}

// ---- live feed -------------------------------------------------------------

function openFeed() {
  view.feed?.close();
  setFeedState('connecting', 'connecting…');
  const es = new EventSource(`/console/api/apps/${encodeURIComponent(view.app.id)}/feed?page=${PAGE_ID}`);
  view.feed = es;
  es.onopen = () => setFeedState(view.paused ? 'paused' : 'live', view.paused ? 'paused' : 'live');
  es.onerror = () => {
    // EventSource retries by itself unless the answer was final (401, 429...).
    if (es.readyState === EventSource.CLOSED) setFeedState('closed', 'feed closed: reload to retry');
    else setFeedState('connecting', 'reconnecting…');
  };
  es.onmessage = (m) => {
    let entry;
    try {
      entry = JSON.parse(m.data);
    } catch {
      return;
    }
    view.log.push(entry);
    if (view.log.length > MAX_LOG) {
      view.log.splice(0, view.log.length - MAX_LOG);
      view.forgotten += 1;
    }
    if (view.paused) view.arrivedWhilePaused += 1;
    else queueRender();
  };
  es.addEventListener('dropped', (m) => {
    view.dropped += Number(m.data) || 0;
    renderNotices();
  });
}

// ---- log --------------------------------------------------------------------

const KIND_LABELS = {
  connection_opened: 'connected',
  connection_closed: 'disconnected',
  subscribed: 'subscribed',
  subscription_failed: 'subscription failed',
  unsubscribed: 'unsubscribed',
  rest_event: 'REST event',
  client_event: 'client event',
  webhook_sent: 'webhook sent',
  webhook_failed: 'webhook failed',
};

function channelsOf(e) {
  if (e.channels) return e.channels;
  return e.channel ? [e.channel] : [];
}

function detailsOf(e) {
  switch (e.kind) {
    case 'connection_opened':
      return e.origin ? `origin ${e.origin}` : 'no origin header';
    case 'connection_closed':
      return e.code ? `close code ${e.code}` : 'no close code (connection dropped)';
    case 'subscription_failed':
      return e.reason;
    case 'rest_event':
      return `${e.size} bytes` + (e.excluded_socket ? `, excluding ${e.excluded_socket}` : '');
    case 'client_event':
      return `${e.size} bytes`;
    case 'webhook_sent':
      return `${e.events} event(s) to ${e.url}`;
    case 'webhook_failed':
      return `${e.events} event(s) to ${e.url}: ${e.reason}`;
    default:
      return '';
  }
}

function matches(e) {
  const ch = $('filter-channel').value.trim();
  const ev = $('filter-event').value.trim();
  const sock = $('filter-socket').value.trim();
  if (ch && !channelsOf(e).some((c) => c.includes(ch))) return false;
  if (ev && !(e.event || '').includes(ev)) return false;
  if (sock && !(e.socket_id || '').includes(sock) && !(e.excluded_socket || '').includes(sock)) return false;
  return true;
}

function queueRender() {
  if (view.renderQueued) return;
  view.renderQueued = true;
  requestAnimationFrame(() => {
    view.renderQueued = false;
    renderLog();
  });
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text ?? '';
  return td;
}

function renderLog() {
  const rows = [];
  let shown = 0;
  for (let i = view.log.length - 1; i >= 0 && rows.length < MAX_ROWS; i--) {
    const e = view.log[i];
    if (!matches(e)) continue;
    shown += 1;
    const tr = document.createElement('tr');
    tr.dataset.kind = e.kind;
    if (e.socket_id) tr.dataset.socket = e.socket_id;
    tr.dataset.channel = channelsOf(e).join(',');
    if (e.event) tr.dataset.event = e.event;
    if (e.node) tr.dataset.node = e.node;
    tr.append(
      cell(new Date(e.time).toLocaleTimeString([], { hour12: false }) + '.' + String(e.time % 1000).padStart(3, '0')),
      cell(e.node ? e.node : 'this'),
      cell(KIND_LABELS[e.kind] || e.kind),
      cell(e.socket_id),
      cell(channelsOf(e).join(', ')),
      cell(e.event),
      cell(detailsOf(e)),
    );
    rows.push(tr);
  }
  $('log').replaceChildren(...rows);
  $('log-count').textContent = `${shown} shown of ${view.log.length} kept (the page keeps the last ${MAX_LOG})`;
  renderNotices();
}

function renderNotices() {
  const parts = [];
  const skipped = view.skippedAtOpen === null ? 0 : view.skippedNow - view.skippedAtOpen;
  if (skipped > 0) parts.push(`${skipped} events sampled out (the broker shows at most ${view.eventsPerSecond}/s)`);
  if (view.dropped > 0) parts.push(`${view.dropped} events dropped (this page fell behind)`);
  if (view.paused && view.arrivedWhilePaused > 0) parts.push(`${view.arrivedWhilePaused} new while paused`);
  if (view.forgotten > 0) parts.push(`${view.forgotten} older entries forgotten`);
  $('notices').textContent = parts.join(' · ');
}

function setupLogControls() {
  for (const id of ['filter-channel', 'filter-event', 'filter-socket']) $(id).addEventListener('input', queueRender);
  $('pause').addEventListener('click', () => {
    view.paused = !view.paused;
    $('pause').setAttribute('aria-pressed', String(view.paused));
    $('pause').textContent = view.paused ? 'Resume' : 'Pause';
    if (view.feed?.readyState === EventSource.OPEN) setFeedState(view.paused ? 'paused' : 'live', view.paused ? 'paused' : 'live');
    if (!view.paused) {
      view.arrivedWhilePaused = 0;
      queueRender();
    } else renderNotices();
  });
  $('clear').addEventListener('click', () => {
    view.log = [];
    view.forgotten = 0;
    queueRender();
  });
}

// ---- graphs -----------------------------------------------------------------

const SVG = 'http://www.w3.org/2000/svg';

/** Draws `values` (numbers, or null for "not measured") as lines over the last `span` seconds. */
function drawGraph(svg, points, span) {
  const W = 300;
  const H = 60;
  const now = points.length ? points[points.length - 1].time : 0;
  const max = Math.max(1, ...points.map((p) => p.value ?? 0));
  const lines = [];
  let current = [];
  for (const p of points) {
    if (p.value === null || p.value === undefined) {
      if (current.length) lines.push(current);
      current = [];
      continue;
    }
    const x = W - ((now - p.time) / span) * W;
    const y = H - 4 - (p.value / max) * (H - 12);
    current.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  }
  if (current.length) lines.push(current);
  const children = lines.map((pts) => {
    const line = document.createElementNS(SVG, 'polyline');
    line.setAttribute('points', pts.length === 1 ? `${pts[0]} ${pts[0]}` : pts.join(' '));
    return line;
  });
  const label = document.createElementNS(SVG, 'text');
  label.setAttribute('x', '2');
  label.setAttribute('y', '8');
  label.textContent = `max ${max}`;
  svg.replaceChildren(label, ...children);
}

async function refreshStats() {
  if (!view.app) return;
  const app = view.app;
  let stats;
  try {
    const res = await api(`/apps/${encodeURIComponent(app.id)}/stats`);
    if (!res.ok || app !== view.app) return;
    stats = await res.json();
  } catch {
    return;
  }
  if (view.skippedAtOpen === null) view.skippedAtOpen = stats.skipped;
  view.skippedNow = stats.skipped;
  view.eventsPerSecond = stats.events_per_second;
  const span = Math.max(60, stats.series.length);
  drawGraph($('conn-graph'), stats.series.map((s) => ({ time: s.time, value: s.connections })), span);
  drawGraph($('msg-graph'), stats.series.map((s) => ({ time: s.time, value: s.messages })), span);
  $('conn-now').textContent = String(stats.connections);
  const last = stats.series[stats.series.length - 1];
  $('msg-now').textContent = last && last.messages !== null ? String(last.messages) : '–';
  $('graph-span').textContent =
    `Last ${Math.round(span / 60)} min, one point a second. Messages are counted only while a console is open (gaps before).` +
    (stats.viewers > 1 ? ` ${stats.viewers} consoles open.` : '');
  $('channels-scope').textContent = stats.cluster ? '(whole cluster)' : '(this node)';
  renderNotices();
}

// ---- channels and members -----------------------------------------------------

async function refreshChannels() {
  if (!view.app) return;
  const app = view.app;
  const prefix = $('channel-prefix').value;
  let list;
  try {
    const res = await api(`/apps/${encodeURIComponent(app.id)}/channels?prefix=${encodeURIComponent(prefix)}`);
    if (app !== view.app) return;
    if (!res.ok) {
      $('channels-more').textContent = await res.text();
      return;
    }
    list = await res.json();
  } catch {
    return;
  }
  $('channels').replaceChildren(
    ...list.channels.map((c) => {
      const tr = document.createElement('tr');
      tr.dataset.channel = c.name;
      tr.append(cell(c.name), cell(String(c.subscriptions)), cell(c.users === null ? '' : String(c.users)));
      if (c.users !== null) {
        tr.className = 'presence';
        tr.title = 'show members';
        tr.addEventListener('click', () => {
          view.selectedPresence = c.name;
          refreshMembers();
        });
      }
      return tr;
    }),
  );
  const more = list.total - list.channels.length;
  $('channels-more').textContent =
    (list.total === 0 ? 'No occupied channels' : `${list.total} occupied`) + (more > 0 ? ` (${more} more not listed; narrow the prefix)` : '');
  if (view.selectedPresence) refreshMembers();
}

async function refreshMembers() {
  const app = view.app;
  const channel = view.selectedPresence;
  if (!app || !channel) return;
  const res = await api(`/apps/${encodeURIComponent(app.id)}/channels/${encodeURIComponent(channel)}/members`);
  if (app !== view.app || channel !== view.selectedPresence) return;
  $('members-panel').hidden = false;
  $('members-channel').textContent = channel;
  if (!res.ok) {
    $('members').replaceChildren(Object.assign(document.createElement('li'), { textContent: await res.text() }));
    return;
  }
  const { users } = await res.json();
  const items = users.length ? users : ['(no members: the channel is empty)'];
  $('members').replaceChildren(...items.map((u) => Object.assign(document.createElement('li'), { textContent: u })));
}

// ---- channel history -------------------------------------------------------------

async function showHistory(ev) {
  ev.preventDefault();
  const app = view.app;
  const channel = $('history-channel').value.trim();
  if (!app || !channel) return;
  const res = await api(`/apps/${encodeURIComponent(app.id)}/channels/${encodeURIComponent(channel)}/history`);
  if (app !== view.app) return;
  if (!res.ok) {
    $('history-table').hidden = true;
    $('history-summary').textContent = await res.text();
    return;
  }
  const page = await res.json();
  $('history-summary').textContent = `epoch ${page.epoch}: positions ${page.oldest}–${page.newest} kept; newest ${page.events.length} shown`;
  $('history').replaceChildren(
    ...page.events.map((e) => {
      const tr = document.createElement('tr');
      const data = typeof e.data === 'string' ? e.data : JSON.stringify(e.data);
      tr.append(cell(String(e.position)), cell(e.event), cell(data.length > 200 ? `${data.slice(0, 200)}…` : data), cell(new Date(e.published_at_ms).toISOString()));
      return tr;
    }),
  );
  $('history-table').hidden = false;
}

$('history-form').addEventListener('submit', (ev) => showHistory(ev).catch(() => {}));

// ---- event creator -------------------------------------------------------------

function setupCreator() {
  $('trigger-form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const out = $('trigger-result');
    out.className = '';
    const channels = $('trigger-channels').value.split(',').map((c) => c.trim()).filter(Boolean);
    const name = $('trigger-event').value.trim();
    const data = $('trigger-data').value;
    try {
      JSON.parse(data);
    } catch (e) {
      out.className = 'error';
      out.textContent = `Data is not valid JSON: ${e.message}`;
      return;
    }
    const res = await api(`/apps/${encodeURIComponent(view.app.id)}/events`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ name, channels, data }),
    });
    if (res.ok) {
      out.textContent = `Sent ${name} to ${channels.join(', ')}`;
    } else {
      out.className = 'error';
      out.textContent = `Refused (${res.status}): ${(await res.text()).trim()}`;
    }
  });
}

// ---- start --------------------------------------------------------------------

setupLogControls();
setupCreator();
$('channel-prefix').addEventListener('input', () => refreshChannels());
loadApps().catch(() => {});
setInterval(refreshStats, 1000);
setInterval(refreshChannels, 2000);
