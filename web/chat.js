// The chat page. User text only ever reaches the DOM through textContent, so a
// message such as <img src=x onerror=...> is shown as the characters it is.
(() => {
  'use strict';

  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const cfg = {
    csrf: meta('csrf-token'),
    user: meta('chat-user'),
    userId: Number(meta('chat-user-id')),
    maxChars: Number(meta('chat-max-chars')) || 225,
    key: meta('pusher-key'),
    wsHost: meta('pusher-ws-host'),
    wsPort: Number(meta('pusher-ws-port')),
  };
  const PAGE = 50;
  const RANK = { Sent: 0, Delivered: 1, Seen: 2 };
  const TICKS = { Sent: '✓', Delivered: '✓✓', Seen: '✓✓' };
  // Words, not colour, tell the states apart (also on phones).
  const LABEL = { Sent: 'Sent', Delivered: 'Delivered', Seen: 'Seen' };
  const NEAR_LIMIT = 0.8;

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
  const convList = $('conversation-list');

  /** id -> summary, for the sidebar. */
  const conversations = new Map();
  /**
   * The open conversation: { id, channelName, channel, messages: Map(id -> {data, el}), hasOlder,
   * historyLoaded (its newest page has been merged), historyRequest, historyAgain (see syncHistory) }.
   */
  let current = null;
  let pusher = null;
  /** The recovery helper's handle (clients/pusher-recovery), or null when it did not load. */
  let recovery = null;
  // The channels the broker keeps history for (scripts/start, docker-compose.yml).
  const RECOVERED_CHANNELS = ['private-a_channel', 'private-conversation-*'];

  // ---- talking to the app -------------------------------------------------

  async function send(method, url, body) {
    const res = await fetch(url, {
      method,
      credentials: 'same-origin',
      headers: { 'X-CSRF-Token': cfg.csrf, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status === 401) window.location.assign('/login');
    return res;
  }

  async function getJson(url) {
    const res = await fetch(url, { credentials: 'same-origin' });
    if (res.status === 401) window.location.assign('/login');
    if (!res.ok) throw new Error(await errorText(res));
    return res.json();
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

  const socketId = () => (pusher && pusher.connection.socket_id) || undefined;

  // ---- the sidebar ------------------------------------------------------------

  function unreadText(n) {
    return n >= 100 ? '99+' : String(n);
  }

  function renderSidebar() {
    const items = [...conversations.values()].sort((a, b) => (b.last_message_at || '').localeCompare(a.last_message_at || '') || b.id - a.id);
    convList.replaceChildren(
      ...items.map((c) => {
        const li = document.createElement('li');
        li.dataset.id = String(c.id);
        li.dataset.kind = c.kind;
        if (current && current.id === c.id) li.classList.add('active');
        const button = document.createElement('button');
        button.type = 'button';
        const title = document.createElement('span');
        title.className = 'conv-title';
        title.textContent = c.title;
        const last = document.createElement('span');
        last.className = 'conv-last';
        last.textContent = c.last_message ? `${c.last_message.name}: ${c.last_message.message}` : 'No messages yet';
        button.append(title, last);
        const open = current && current.id === c.id;
        if (c.unread > 0 && !open) {
          const badge = document.createElement('span');
          badge.className = 'unread';
          badge.textContent = unreadText(c.unread);
          badge.setAttribute('aria-label', `${unreadText(c.unread)} unread`);
          button.append(badge);
        }
        button.addEventListener('click', () => {
          openConversation(c.id);
          document.body.classList.remove('sidebar-open');
        });
        li.append(button);
        return li;
      }),
    );
    const total = items.reduce((n, c) => n + (current && current.id === c.id ? 0 : c.unread), 0);
    const badge = $('total-unread');
    badge.hidden = total === 0;
    badge.textContent = unreadText(total);
  }

  async function loadSidebar() {
    try {
      const all = await getJson('/api/conversations');
      conversations.clear();
      for (const c of all) conversations.set(c.id, c);
      renderSidebar();
      deliverPreviews();
      return all;
    } catch (e) {
      showNotice(`Could not load conversations: ${e.message}`, 'error');
      return [];
    }
  }

  /**
   * A last message shown in the list has reached this device: it is Delivered
   * (Seen still needs the conversation open). The open conversation's history
   * acknowledges its own messages.
   */
  function deliverPreviews() {
    for (const c of conversations.values()) {
      const m = c.last_message;
      if (!m || m.my_status !== 'Sent' || (current && current.id === c.id)) continue;
      m.my_status = 'Delivered';
      send('POST', `/api/conversations/${c.id}/receipts`, { status: 'Delivered', ids: [m.id], socket_id: socketId() }).catch(() => {});
    }
  }

  // ---- rendering messages ---------------------------------------------------

  const isMine = (data) => data.sender_id === cfg.userId || (data.sender_id === undefined && data.name === cfg.user);

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
      const receipt = document.createElement('button');
      receipt.type = 'button';
      receipt.className = 'receipt';
      const ticks = document.createElement('span');
      ticks.className = 'ticks';
      ticks.setAttribute('aria-hidden', 'true');
      const label = document.createElement('span');
      label.className = 'status-label';
      receipt.append(ticks, label);
      receipt.addEventListener('click', () => toggleNames(li, data.id));
      receipt.addEventListener('mouseenter', () => loadNames(receipt, data.id));
      info.append(receipt);
    }
    bubble.append(author, text, info);
    li.append(bubble);
    return li;
  }

  /** "Sent / Delivered / Seen" for one recipient; counts for several. */
  function receiptText(d) {
    if (d.recipients > 1) {
      const parts = [d.delivered === d.recipients ? `Delivered to all ${d.recipients}` : `Delivered to ${d.delivered} of ${d.recipients}`];
      if (d.seen > 0) parts.push(d.seen === d.recipients ? 'Seen by all' : `Seen by ${d.seen}`);
      return parts.join(' · ');
    }
    return LABEL[d.status] || d.status;
  }

  function paintStatus(entry) {
    const { data, el } = entry;
    el.dataset.status = data.status;
    el.dataset.delivered = String(data.delivered ?? 0);
    el.dataset.seen = String(data.seen ?? 0);
    const ticks = el.querySelector('.ticks');
    if (ticks) {
      ticks.textContent = TICKS[data.status] || '';
      ticks.dataset.status = data.status;
      el.querySelector('.status-label').textContent = receiptText(data);
      el.querySelector('.receipt').dataset.status = data.status;
    }
  }

  async function fetchNames(id) {
    const rows = await getJson(`/api/messages/${id}/receipts`);
    const seen = rows.filter((r) => r.seen_at).map((r) => r.name);
    const delivered = rows.filter((r) => r.delivered_at && !r.seen_at).map((r) => r.name);
    const waiting = rows.filter((r) => !r.delivered_at).map((r) => r.name);
    const parts = [];
    if (seen.length) parts.push(`Seen by ${seen.join(', ')}`);
    if (delivered.length) parts.push(`Delivered to ${delivered.join(', ')}`);
    if (waiting.length) parts.push(`Waiting for ${waiting.join(', ')}`);
    return parts.join(' · ') || 'No recipients';
  }

  async function loadNames(button, id) {
    try {
      button.title = await fetchNames(id);
    } catch {}
  }

  /** Tap on the receipt: the names, under the message (phones have no hover). */
  async function toggleNames(li, id) {
    const open = li.querySelector('.receipt-names');
    if (open) return open.remove();
    const p = document.createElement('p');
    p.className = 'receipt-names';
    p.textContent = '…';
    li.querySelector('.bubble').append(p);
    try {
      p.textContent = await fetchNames(id);
    } catch (e) {
      p.textContent = e.message;
    }
  }

  function nearBottom() {
    return scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 80;
  }

  /**
   * Adds a message or merges what we learn about it. Events and history can
   * arrive in any order, so receipt counts only ever move forward here too.
   */
  function upsert(data) {
    if (!current || !data || typeof data.id !== 'number' || !(data.status in RANK)) return null;
    if (data.conversation_id !== undefined && data.conversation_id !== current.id) return null;
    const existing = current.messages.get(data.id);
    if (existing) {
      mergeReceipts(existing, data);
      if (data.my_status && RANK[data.my_status] > RANK[existing.data.my_status || 'Sent']) existing.data.my_status = data.my_status;
      return existing;
    }
    const stick = nearBottom();
    const entry = { data: { ...data }, el: buildElement(data) };
    if (!isMine(data) && !entry.data.my_status) entry.data.my_status = 'Sent';
    current.messages.set(data.id, entry);
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
    return entry;
  }

  function mergeReceipts(entry, u) {
    const d = entry.data;
    let changed = false;
    for (const k of ['recipients', 'delivered', 'seen']) {
      if (typeof u[k] === 'number' && (d[k] === undefined || u[k] > d[k] || (k === 'recipients' && u[k] !== d[k]))) {
        d[k] = u[k];
        changed = true;
      }
    }
    if (u.status in RANK && RANK[u.status] > RANK[d.status]) {
      d.status = u.status;
      changed = true;
    }
    if (changed) paintStatus(entry);
  }

  // ---- receipts -------------------------------------------------------------

  /** Ids waiting to be reported, per status; flushed as one request each. */
  const pending = { Delivered: new Set(), Seen: new Set() };
  let flushTimer = null;

  function queueReceipt(entry, status) {
    const { data } = entry;
    if (isMine(data) || RANK[data.my_status || 'Sent'] >= RANK[status]) return;
    pending[status].add(data.id);
    if (!flushTimer) flushTimer = setTimeout(flushReceipts, 50);
  }

  async function flushReceipts() {
    flushTimer = null;
    if (!current) return;
    const conv = current;
    for (const status of ['Delivered', 'Seen']) {
      const ids = [...pending[status]].filter((id) => conv.messages.has(id));
      pending[status].clear();
      // Delivered goes first: the sender sees both steps.
      for (let i = 0; i < ids.length; i += 200) {
        const chunk = ids.slice(i, i + 200);
        try {
          const res = await send('POST', `/api/conversations/${conv.id}/receipts`, { status, ids: chunk, socket_id: socketId() });
          if (!res.ok) continue;
          for (const id of chunk) {
            const entry = conv.messages.get(id);
            if (entry && RANK[status] > RANK[entry.data.my_status || 'Sent']) entry.data.my_status = status;
          }
        } catch {
          // Retried on the next reconnect or visibility change.
        }
      }
    }
  }

  /** Everything loaded that I have not acknowledged becomes Delivered, in one request. */
  function deliverAll() {
    if (!current) return;
    for (const entry of current.messages.values()) {
      if (!isMine(entry.data) && entry.data.my_status === 'Sent') queueReceipt(entry, 'Delivered');
    }
  }

  /** Seen means on screen in a visible tab, not merely loaded. */
  const tabIsVisible = () => document.visibilityState === 'visible';
  const onScreen = new Set();

  function markSeen() {
    if (!current || !tabIsVisible()) return;
    let any = false;
    for (const id of onScreen) {
      const entry = current.messages.get(id);
      if (!entry || entry.data.my_status === 'Seen') continue;
      queueReceipt(entry, 'Delivered');
      queueReceipt(entry, 'Seen');
      any = true;
    }
    if (any) {
      const c = conversations.get(current.id);
      if (c && c.unread) {
        c.unread = 0;
        renderSidebar();
      }
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
  document.addEventListener('visibilitychange', markSeen);
  window.addEventListener('focus', markSeen);

  function applyReceipts(event) {
    if (!current || !event || event.conversation_id !== current.id || !Array.isArray(event.updates)) return;
    for (const u of event.updates) {
      const entry = current.messages.get(u.id);
      if (entry) mergeReceipts(entry, u);
    }
  }

  // ---- history --------------------------------------------------------------

  /**
   * Loads the newest page and merges it: run on opening and after every
   * (re)subscription. Asked again while a load is in flight, it loads once more
   * afterwards: the page in flight may have been answered before the
   * subscription began, and a message sent in between would be in neither.
   */
  function syncHistory() {
    const conv = current;
    if (conv.historyRequest) {
      conv.historyAgain = true;
      return conv.historyRequest;
    }
    conv.historyRequest = (async () => {
      try {
        const page = await getJson(`/api/conversations/${conv.id}/messages?limit=${PAGE}`);
        if (current === conv) mergeNewest(conv, page);
      } catch (e) {
        if (current === conv) showNotice(`Could not load messages: ${e.message}`, 'error');
      } finally {
        conv.historyRequest = null;
      }
      if (conv.historyAgain && current === conv) {
        conv.historyAgain = false;
        await syncHistory();
      }
    })();
    return conv.historyRequest;
  }

  /**
   * Merges the newest page. Whether older messages exist is known from the
   * first page only, whatever live messages came before it. A later full page
   * that shares no message with what is loaded may leave a gap below it (the
   * page was away longer than a page's worth): the messages below the gap are
   * dropped, so that scroll-back, which pages down from the oldest loaded
   * message, walks through the gap instead of skipping it.
   */
  function mergeNewest(conv, page) {
    const first = !conv.historyLoaded;
    const stick = first || nearBottom();
    if (!first && page.length === PAGE && !page.some((m) => conv.messages.has(m.id))) {
      dropBelow(conv, page[0].id);
      conv.hasOlder = true;
    }
    page.forEach(upsert);
    if (first) conv.hasOlder = page.length === PAGE;
    conv.historyLoaded = true;
    olderButton.hidden = !conv.hasOlder;
    if (stick) scroller.scrollTop = scroller.scrollHeight;
    deliverAll();
    markSeen();
  }

  function dropBelow(conv, id) {
    for (const [mid, entry] of conv.messages) {
      if (mid >= id) continue;
      visibility.unobserve(entry.el);
      onScreen.delete(mid);
      entry.el.remove();
      conv.messages.delete(mid);
    }
  }

  let olderRequest = null;

  /** Scroll-back: the page before the oldest loaded message (a cursor, not an offset). */
  function loadOlder() {
    if (!current || !current.historyLoaded || !current.hasOlder || olderRequest || current.messages.size === 0) return olderRequest;
    const conv = current;
    const oldest = Math.min(...conv.messages.keys());
    olderButton.disabled = true;
    olderRequest = (async () => {
      try {
        const page = await getJson(`/api/conversations/${conv.id}/messages?before=${oldest}&limit=${PAGE}`);
        if (current !== conv) return;
        const height = scroller.scrollHeight;
        const top = scroller.scrollTop;
        page.forEach(upsert);
        scroller.scrollTop = top + scroller.scrollHeight - height;
        conv.hasOlder = page.length === PAGE;
        olderButton.hidden = !conv.hasOlder;
        deliverAll();
      } catch (e) {
        showNotice(`Could not load earlier messages: ${e.message}`, 'error');
      } finally {
        olderButton.disabled = false;
        olderRequest = null;
      }
    })();
    return olderRequest;
  }

  olderButton.addEventListener('click', loadOlder);
  new IntersectionObserver((changes) => changes.some((c) => c.isIntersecting) && loadOlder(), { root: scroller, rootMargin: '200px 0px 0px 0px' }).observe(
    $('older-sentinel'),
  );

  // ---- opening a conversation -------------------------------------------------

  function subscribe(conv, channelName) {
    if (conv.channel) pusher.unsubscribe(conv.channelName);
    conv.channelName = channelName;
    const ch = pusher.subscribe(channelName);
    conv.channel = ch;
    // The first subscription loads the newest page. pusher-js subscribes again
    // after every reconnect: if the helper asked the broker to resume from where
    // this page stood, the broker's notice follows at once. `recovered` means
    // what was posted meanwhile is being replayed on the channel (rendered and
    // acknowledged like live messages), so the database is not asked; anything
    // else (`pusher:recovery_failed`: history lost, window exceeded, ...) means
    // continuity is not proven, so the page catches up from the database. With
    // no resume asked (helper missing, channel not kept), it catches up at once.
    let subscribedBefore = false;
    let resuming = false;
    ch.bind('pusher:subscription_succeeded', () => {
      resuming = subscribedBefore && resumeAsked(channelName);
      subscribedBefore = true;
      if (current === conv && !resuming) syncHistory();
    });
    ch.bind('pusher:recovery', (notice) => {
      if (!resuming) return;
      resuming = false;
      if (current === conv && (!notice || notice.status !== 'recovered')) syncHistory();
    });
    ch.bind('pusher:subscription_error', () => {
      if (current === conv) showNotice('You can no longer read this conversation.', 'error');
    });
    ch.bind('an_event', (data) => {
      if (current !== conv) return;
      const entry = upsert(data);
      if (entry && !isMine(entry.data)) {
        queueReceipt(entry, 'Delivered');
        markSeen();
      }
      bumpSidebar(conv.id, data);
    });
    ch.bind('delivered_message', (d) => current === conv && upsert(d));
    ch.bind('seen_message', (d) => current === conv && upsert(d));
    ch.bind('receipts', applyReceipts);
    ch.bind('client-typing', (data) => {
      if (!data || typeof data.name !== 'string' || data.name === cfg.user) return;
      clearTimeout(typers.get(data.name));
      typers.set(data.name, setTimeout(() => clearTyping(data.name), 3000));
      renderTyping();
    });
  }

  /** Whether the helper sent a resume (epoch and position) with this channel's subscription. */
  function resumeAsked(channelName) {
    const state = recovery && recovery.state(channelName);
    return Boolean(state && state.epoch != null && state.position != null);
  }

  async function openConversation(id) {
    const summary = conversations.get(id);
    if (!summary) return;
    if (current && current.channel) pusher.unsubscribe(current.channelName);
    for (const entry of current ? current.messages.values() : []) visibility.unobserve(entry.el);
    onScreen.clear();
    pending.Delivered.clear();
    pending.Seen.clear();
    typers.clear();
    renderTyping();
    list.replaceChildren();
    olderButton.hidden = true;
    showNotice('');
    current = { id, channelName: null, channel: null, messages: new Map(), hasOlder: false, historyLoaded: false, historyRequest: null, historyAgain: false };
    history.replaceState(null, '', `#c${id}`);
    $('conversation-title').textContent = summary.title;
    renderSidebar();
    renderMembers(summary);
    if (pusher) subscribe(current, summary.channel);
    await syncHistory();
  }

  async function renderMembers(summary) {
    const box = $('members-box');
    box.hidden = summary.kind !== 'group';
    if (box.hidden) return;
    const conv = current;
    try {
      const detail = await getJson(`/api/conversations/${summary.id}`);
      if (current !== conv) return;
      const mayManage = summary.created_by === cfg.userId;
      $('members-summary').textContent = `Members (${detail.members.length})`;
      $('member-list').replaceChildren(
        ...detail.members.map((m) => {
          const li = document.createElement('li');
          li.dataset.userId = String(m.id);
          const name = document.createElement('span');
          name.textContent = m.name;
          li.append(name);
          if (mayManage && m.id !== cfg.userId) {
            const remove = document.createElement('button');
            remove.type = 'button';
            remove.className = 'link-button remove-member';
            remove.textContent = 'Remove';
            remove.addEventListener('click', () => removeMember(summary.id, m));
            li.append(remove);
          }
          return li;
        }),
      );
      $('add-member').hidden = !mayManage;
    } catch (e) {
      showNotice(`Could not load members: ${e.message}`, 'error');
    }
  }

  async function removeMember(cid, member) {
    const res = await send('DELETE', `/api/conversations/${cid}/members/${member.id}`);
    if (!res.ok) return showNotice(await errorText(res), 'error');
    await refreshConversation(cid);
  }

  $('add-member').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const name = $('add-member-name').value.trim();
    if (!name || !current) return;
    const res = await send('POST', `/api/conversations/${current.id}/members`, { username: name });
    if (!res.ok) return showNotice(await errorText(res), 'error');
    $('add-member-name').value = '';
    await refreshConversation(current.id);
  });

  /** After membership changes: new summary, maybe a new channel, new member list. */
  async function refreshConversation(cid) {
    await loadSidebar();
    if (!current || current.id !== cid) return;
    const summary = conversations.get(cid);
    if (!summary) {
      leaveCurrent('You were removed from this conversation.');
      return;
    }
    if (pusher && summary.channel !== current.channelName) subscribe(current, summary.channel);
    renderMembers(summary);
  }

  function leaveCurrent(text) {
    if (current && current.channel) pusher.unsubscribe(current.channelName);
    current = null;
    list.replaceChildren();
    $('conversation-title').textContent = '';
    $('members-box').hidden = true;
    showNotice(text, 'warning');
  }

  /** A message in any conversation: last message, order, and unread count in the sidebar. */
  function bumpSidebar(cid, m) {
    const c = conversations.get(cid);
    if (!c) return loadSidebar();
    c.last_message = { id: m.id, name: m.name, message: m.message };
    if (m.created_at) c.last_message_at = m.created_at;
    const open = current && current.id === cid;
    if (!open && m.name !== cfg.user) c.unread = (c.unread || 0) + 1;
    renderSidebar();
  }

  // ---- starting conversations ---------------------------------------------------

  async function createConversation(body) {
    const res = await send('POST', '/api/conversations', body);
    if (!res.ok) {
      showNotice(await errorText(res), 'error');
      return null;
    }
    const summary = await res.json();
    conversations.set(summary.id, summary);
    await openConversation(summary.id);
    return summary;
  }

  $('new-direct').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const username = $('direct-user').value.trim();
    if (!username) return;
    if (await createConversation({ kind: 'direct', username })) $('direct-user').value = '';
  });

  $('new-group').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const title = $('group-title').value.trim();
    const usernames = $('group-members').value.split(',').map((s) => s.trim()).filter(Boolean);
    if (await createConversation({ kind: 'group', title, usernames })) {
      $('group-title').value = '';
      $('group-members').value = '';
      $('new-group').closest('details').open = false;
    }
  });

  let searchTimer = null;
  function suggestUsers(ev) {
    clearTimeout(searchTimer);
    const q = ev.target.value.split(',').pop().trim();
    if (!q) return;
    searchTimer = setTimeout(async () => {
      try {
        const users = await getJson(`/api/users?q=${encodeURIComponent(q)}`);
        $('user-suggestions').replaceChildren(
          ...users.map((u) => {
            const o = document.createElement('option');
            o.value = u.name;
            return o;
          }),
        );
      } catch {}
    }, 150);
  }
  $('direct-user').addEventListener('input', suggestUsers);
  $('add-member-name').addEventListener('input', suggestUsers);

  $('sidebar-toggle').addEventListener('click', () => {
    const open = document.body.classList.toggle('sidebar-open');
    $('sidebar-toggle').setAttribute('aria-expanded', String(open));
  });

  // ---- sending --------------------------------------------------------------

  const charCount = (s) => [...s].length;

  /** The box grows with the text; the counter shows once the limit is near. */
  function updateComposer() {
    const n = charCount(input.value.trim());
    counter.textContent = `${n}/${cfg.maxChars}`;
    counter.classList.toggle('over', n > cfg.maxChars);
    counter.classList.toggle('near', n >= cfg.maxChars * NEAR_LIMIT);
    input.style.height = 'auto';
    input.style.height = `${input.scrollHeight + 2}px`;
  }

  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    if (!current) return showNotice('Open a conversation first.', 'error');
    const text = input.value.trim();
    if (!text) return showNotice('Type a message first.', 'error');
    if (charCount(text) > cfg.maxChars) return showNotice(`Messages can have at most ${cfg.maxChars} characters.`, 'error');
    const button = $('send');
    button.disabled = true;
    const conv = current;
    try {
      const res = await send('POST', `/api/conversations/${conv.id}/messages`, { message: text });
      if (!res.ok) return showNotice(await errorText(res), 'error');
      const sent = await res.json();
      input.value = '';
      updateComposer();
      if (current === conv) {
        upsert(sent);
        scroller.scrollTop = scroller.scrollHeight;
      }
      bumpSidebar(conv.id, sent);
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
    updateComposer();
    announceTyping();
  });

  // ---- typing indicator -----------------------------------------------------

  const typers = new Map(); // name -> timeout
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
    const ch = current && current.channel;
    if (!ch || !ch.subscribed || now - lastTypingSent < 1500 || !input.value.trim()) return;
    lastTypingSent = now;
    ch.trigger('client-typing', { name: cfg.user });
  }

  // ---- presence ---------------------------------------------------------------

  let presence = null;

  /** While my own connection is down the list would be stale, so it says so instead. */
  function renderOnline() {
    const connected = pusher && pusher.connection.state === 'connected' && presence && presence.subscribed;
    const ul = $('online-list');
    $('online-stale').hidden = Boolean(connected);
    if (!connected) {
      ul.replaceChildren();
      $('online-count').textContent = '–';
      return;
    }
    const members = presence.members;
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

  async function connect() {
    if (typeof Pusher === 'undefined') {
      showNotice('Live updates are unavailable (pusher-js did not load).', 'error');
      return;
    }
    // An ES module (this script is not one). Without it the page still works:
    // every reconnect then catches up from the database.
    const helper = await import('/static/vendor/pusher-recovery.js').catch(() => null);
    const headers = { 'X-CSRF-Token': cfg.csrf };
    pusher = new Pusher(cfg.key, {
      wsHost: cfg.wsHost,
      wsPort: cfg.wsPort,
      forceTLS: false,
      enabledTransports: ['ws'],
      cluster: 'mt1',
      enableStats: false,
      channelAuthorization: { endpoint: '/pusher/auth', transport: 'ajax', headers },
      userAuthentication: { endpoint: '/pusher/user-auth', transport: 'ajax', headers },
    });
    // Before any subscription, so that each one asks for positions to resume from.
    if (helper) recovery = helper.enableRecovery(pusher, { channels: RECOVERED_CHANNELS });

    let wasConnected = false;
    pusher.connection.bind('state_change', ({ current: state }) => {
      connectionEl.dataset.state = state;
      connectionEl.textContent = state === 'connected' ? 'live' : state;
      renderOnline();
      if (state === 'connected') {
        // Unread counts may have moved while we were away.
        if (wasConnected) loadSidebar();
        wasConnected = true;
      }
    });

    // Sign in, so that notices sent to this user (sendToUser) arrive: unread
    // counts move without a subscription per conversation.
    pusher.signin();
    pusher.user.bind('new_message', (m) => {
      if (!m || typeof m.conversation_id !== 'number') return;
      if (current && current.id === m.conversation_id) return; // the channel has it
      bumpSidebar(m.conversation_id, m);
      // It reached this device: that is Delivered, even if not opened.
      send('POST', `/api/conversations/${m.conversation_id}/receipts`, { status: 'Delivered', ids: [m.id], socket_id: socketId() }).catch(() => {});
    });
    pusher.user.bind('conversation_added', () => loadSidebar());
    pusher.user.bind('members_changed', (m) => m && refreshConversation(m.conversation_id));
    pusher.user.bind('conversation_removed', async (m) => {
      await loadSidebar();
      if (m && current && current.id === m.conversation_id) leaveCurrent('You were removed from this conversation.');
    });

    presence = pusher.subscribe('presence-chat');
    presence.bind('pusher:subscription_succeeded', renderOnline);
    presence.bind('pusher:member_added', renderOnline);
    presence.bind('pusher:member_removed', renderOnline);
    presence.bind('pusher:subscription_error', () => showNotice('Could not join the online list.', 'error'));
    // A conversation opened while the helper was loading.
    const opened = current && conversations.get(current.id);
    if (opened && !current.channel) subscribe(current, opened.channel);
  }

  async function start() {
    updateComposer();
    const connecting = connect();
    const all = await loadSidebar();
    await connecting;
    const fromHash = Number((window.location.hash.match(/^#c(\d+)$/) || [])[1]);
    const first = all.find((c) => c.id === fromHash) || all.find((c) => c.kind === 'everyone') || all[0];
    if (first) await openConversation(first.id);
  }

  start();
})();
