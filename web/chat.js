// The chat page. User text only ever reaches the DOM through textContent, so a
// message such as <img src=x onerror=...> is shown as the characters it is.
(() => {
  'use strict';

  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const cfg = {
    csrf: meta('csrf-token'),
    user: meta('chat-user'),
    key: meta('pusher-key'),
    wsHost: meta('pusher-ws-host'),
    wsPort: Number(meta('pusher-ws-port')),
  };
  const MAX_CHARS = 225;
  const PAGE = 200;
  const RANK = { Sent: 0, Delivered: 1, Seen: 2 };
  const TICKS = { Sent: '✓', Delivered: '✓✓', Seen: '✓✓' };

  const $ = (id) => document.getElementById(id);
  const list = $('messages');
  const scroller = $('messages-scroll');
  const form = $('composer');
  const input = $('message');
  const counter = $('counter');
  const notice = $('notice');
  const typingEl = $('typing');
  const olderButton = $('load-older');
  const connectionEl = $('connection');

  /** id -> { data, el } for every message on the page. */
  const messages = new Map();
  /** Ids of others' messages currently inside the scroll viewport. */
  const onScreen = new Set();
  /** `${id}:${status}` -> the receipt request being sent, so each is posted once at a time. */
  const inFlight = new Map();

  let pusher = null;

  // ---- talking to the app -------------------------------------------------

  async function post(url, fields) {
    const body = new URLSearchParams(fields);
    const res = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': cfg.csrf },
      body,
    });
    if (res.status === 401) window.location.assign('/login');
    return res;
  }

  async function errorText(res) {
    try {
      const j = await res.json();
      if (j && typeof j.error === 'string') return j.error;
    } catch {}
    return `request failed (${res.status})`;
  }

  function showNotice(text, kind = 'info') {
    notice.textContent = text;
    notice.dataset.kind = kind;
    notice.hidden = !text;
  }

  // ---- rendering ------------------------------------------------------------

  const isMine = (data) => data.name === cfg.user;

  function formatTime(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? '' : d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function buildElement(data) {
    const li = document.createElement('li');
    li.className = `msg ${isMine(data) ? 'mine' : 'theirs'}`;
    li.dataset.id = String(data.id);

    const bubble = document.createElement('div');
    bubble.className = 'bubble';

    const author = document.createElement('span');
    author.className = 'author';
    author.textContent = data.name;

    const text = document.createElement('p');
    text.className = 'text';
    text.textContent = data.message;

    const info = document.createElement('span');
    info.className = 'info';
    const time = document.createElement('time');
    time.dateTime = data.created_at || '';
    time.textContent = formatTime(data.created_at);
    info.append(time);
    if (isMine(data)) {
      const ticks = document.createElement('span');
      ticks.className = 'ticks';
      const label = document.createElement('span');
      label.className = 'status-label';
      info.append(ticks, label);
    }

    bubble.append(author, text, info);
    li.append(bubble);
    return li;
  }

  function paintStatus(entry) {
    const { data, el } = entry;
    el.dataset.status = data.status;
    const ticks = el.querySelector('.ticks');
    if (ticks) {
      ticks.textContent = TICKS[data.status] || '';
      ticks.title = data.status;
      ticks.dataset.status = data.status;
      el.querySelector('.status-label').textContent = data.status;
    }
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  /**
   * Adds a message or merges what we learn about it. Events and history can
   * arrive in any order, so a status only ever moves forward here too.
   */
  function upsert(data) {
    if (!data || typeof data.id !== 'number' || !(data.status in RANK)) return;
    const existing = messages.get(data.id);
    if (existing) {
      if (RANK[data.status] > RANK[existing.data.status]) {
        existing.data.status = data.status;
        paintStatus(existing);
      }
      return;
    }
    const stick = nearBottom();
    const entry = { data: { ...data }, el: buildElement(data) };
    messages.set(data.id, entry);
    paintStatus(entry);
    let before = null;
    for (const li of list.children) {
      if (Number(li.dataset.id) > data.id) {
        before = li;
        break;
      }
    }
    list.insertBefore(entry.el, before);
    if (!isMine(data)) {
      visibility.observe(entry.el);
      clearTyping(data.name);
    }
    if (stick && !before) scroller.scrollTop = scroller.scrollHeight;
  }

  // ---- receipts -------------------------------------------------------------

  function acknowledge(entry, status) {
    const { data } = entry;
    if (isMine(data) || RANK[data.status] >= RANK[status]) return Promise.resolve();
    const key = `${data.id}:${status}`;
    // Callers await the same request, so Seen is never posted before Delivered has landed.
    if (!inFlight.has(key)) {
      const request = (async () => {
        try {
          const fields = {};
          const socketId = pusher && pusher.connection.socket_id;
          if (socketId) fields.socket_id = socketId;
          const res = await post(`/conversations/${data.id}/${status === 'Seen' ? 'seen' : 'delivered'}`, fields);
          if (res.ok && RANK[status] > RANK[data.status]) {
            data.status = status;
            paintStatus(entry);
          }
        } catch {
          // Retried on the next reconnect or focus.
        } finally {
          inFlight.delete(key);
        }
      })();
      inFlight.set(key, request);
    }
    return inFlight.get(key);
  }

  const tabIsWatched = () => document.visibilityState === 'visible' && document.hasFocus();

  /** Delivered first, then Seen if the recipient can see it: the sender gets both steps. */
  async function receive(entry) {
    await acknowledge(entry, 'Delivered');
    markSeen();
  }

  function markAllDelivered() {
    for (const entry of messages.values()) {
      if (!isMine(entry.data) && entry.data.status === 'Sent') receive(entry);
    }
  }

  async function markSeen() {
    if (!tabIsWatched()) return;
    for (const id of onScreen) {
      const entry = messages.get(id);
      if (!entry || entry.data.status === 'Seen') continue;
      if (entry.data.status === 'Sent') await acknowledge(entry, 'Delivered');
      acknowledge(entry, 'Seen');
    }
  }

  const visibility = new IntersectionObserver(
    (changes) => {
      for (const c of changes) {
        const id = Number(c.target.dataset.id);
        if (c.isIntersecting) onScreen.add(id);
        else onScreen.delete(id);
      }
      markSeen();
    },
    { root: scroller, threshold: 0.6 },
  );
  window.addEventListener('focus', markSeen);
  document.addEventListener('visibilitychange', markSeen);

  // ---- history --------------------------------------------------------------

  let historyRequest = null;

  /** Loads the newest page and merges it: run at start and after every (re)subscription. */
  function syncHistory() {
    if (historyRequest) return historyRequest;
    historyRequest = (async () => {
      try {
        const res = await fetch(`/conversations/?limit=${PAGE}`, { credentials: 'same-origin' });
        if (res.status === 401) return window.location.assign('/login');
        if (!res.ok) throw new Error(await errorText(res));
        const page = await res.json();
        const firstLoad = messages.size === 0;
        const stick = firstLoad || nearBottom();
        page.forEach(upsert);
        if (firstLoad) olderButton.hidden = page.length < PAGE;
        if (stick) scroller.scrollTop = scroller.scrollHeight;
      } catch (e) {
        showNotice(`Could not load messages: ${e.message}`, 'error');
      } finally {
        historyRequest = null;
      }
    })();
    return historyRequest;
  }

  olderButton.addEventListener('click', async () => {
    const oldest = Math.min(...messages.keys());
    if (!Number.isFinite(oldest)) return;
    olderButton.disabled = true;
    try {
      const res = await fetch(`/conversations/?before=${oldest}&limit=${PAGE}`, { credentials: 'same-origin' });
      if (!res.ok) throw new Error(await errorText(res));
      const page = await res.json();
      const height = scroller.scrollHeight;
      page.forEach(upsert);
      scroller.scrollTop += scroller.scrollHeight - height;
      olderButton.hidden = page.length < PAGE;
    } catch (e) {
      showNotice(`Could not load earlier messages: ${e.message}`, 'error');
    } finally {
      olderButton.disabled = false;
    }
  });

  // ---- sending --------------------------------------------------------------

  const charCount = (s) => [...s].length;

  function updateCounter() {
    const n = charCount(input.value.trim());
    counter.textContent = `${n}/${MAX_CHARS}`;
    counter.classList.toggle('over', n > MAX_CHARS);
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = input.value.trim();
    if (!text) return showNotice('Type a message first.', 'error');
    if (charCount(text) > MAX_CHARS) return showNotice(`Messages can have at most ${MAX_CHARS} characters.`, 'error');
    const button = $('send');
    button.disabled = true;
    try {
      const res = await post('/conversation', { message: text });
      if (!res.ok) return showNotice(await errorText(res), 'error');
      const sent = await res.json();
      input.value = '';
      updateCounter();
      upsert(sent);
      scroller.scrollTop = scroller.scrollHeight;
      if (sent.broadcast === false) {
        showNotice('Saved, but live delivery is down right now: others will see it when they reconnect.', 'warning');
      } else {
        showNotice('');
      }
    } catch (e) {
      showNotice(`Not sent: ${e.message}`, 'error');
    } finally {
      button.disabled = false;
      input.focus();
    }
  });

  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      form.requestSubmit();
    }
  });
  input.addEventListener('input', () => {
    updateCounter();
    announceTyping();
  });

  // ---- typing indicator -----------------------------------------------------

  const typers = new Map(); // name -> timeout
  let typingChannel = null;
  let lastTypingSent = 0;

  function renderTyping() {
    const names = [...typers.keys()];
    typingEl.textContent =
      names.length === 0 ? '' : names.length === 1 ? `${names[0]} is typing…` : `${names.join(', ')} are typing…`;
  }

  function clearTyping(name) {
    if (typers.has(name)) {
      clearTimeout(typers.get(name));
      typers.delete(name);
      renderTyping();
    }
  }

  function announceTyping() {
    const now = Date.now();
    if (!typingChannel || !typingChannel.subscribed || now - lastTypingSent < 1500 || !input.value.trim()) return;
    lastTypingSent = now;
    typingChannel.trigger('client-typing', { name: cfg.user });
  }

  // ---- presence ---------------------------------------------------------------

  function renderOnline(members) {
    const ul = $('online-list');
    const names = [];
    members.each((m) => names.push({ id: m.id, name: (m.info && m.info.name) || `user ${m.id}` }));
    names.sort((a, b) => a.name.localeCompare(b.name));
    ul.replaceChildren(
      ...names.map(({ id, name }) => {
        const li = document.createElement('li');
        li.dataset.userId = id;
        li.textContent = name;
        if (id === members.myID) li.classList.add('me');
        return li;
      }),
    );
    $('online-count').textContent = String(names.length);
  }

  // ---- the broker -------------------------------------------------------------

  function connect() {
    if (typeof Pusher === 'undefined') {
      showNotice('Live updates are unavailable (pusher-js did not load).', 'error');
      return;
    }
    pusher = new Pusher(cfg.key, {
      wsHost: cfg.wsHost,
      wsPort: cfg.wsPort,
      forceTLS: false,
      enabledTransports: ['ws'],
      cluster: 'mt1',
      enableStats: false,
      channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax', headers: { 'X-CSRF-Token': cfg.csrf } },
    });

    pusher.connection.bind('state_change', ({ current }) => {
      connectionEl.dataset.state = current;
      connectionEl.textContent = current === 'connected' ? 'live' : current;
    });

    const chat = pusher.subscribe('private-a_channel');
    // Fires on the first subscription and again after every reconnect: whatever
    // was sent meanwhile comes from history, and all of it gets acknowledged.
    chat.bind('pusher:subscription_succeeded', async () => {
      await syncHistory();
      markAllDelivered();
    });
    chat.bind('an_event', (data) => {
      upsert(data);
      const entry = messages.get(data.id);
      if (entry && !isMine(entry.data)) receive(entry);
    });
    chat.bind('delivered_message', upsert);
    chat.bind('seen_message', upsert);

    const presence = pusher.subscribe('presence-chat');
    presence.bind('pusher:subscription_succeeded', (members) => renderOnline(members));
    presence.bind('pusher:member_added', () => renderOnline(presence.members));
    presence.bind('pusher:member_removed', () => renderOnline(presence.members));
    presence.bind('pusher:subscription_error', () => showNotice('Could not join the online list.', 'error'));

    typingChannel = pusher.subscribe('private-typing');
    typingChannel.bind('client-typing', (data) => {
      if (!data || typeof data.name !== 'string' || data.name === cfg.user) return;
      clearTimeout(typers.get(data.name));
      typers.set(data.name, setTimeout(() => clearTyping(data.name), 3000));
      renderTyping();
    });
  }

  updateCounter();
  syncHistory().then(markSeen);
  connect();
})();
