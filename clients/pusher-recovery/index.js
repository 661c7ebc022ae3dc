// pusher-recovery: no event lost across a reconnect, for stock pusher-js.
//
// Uses only pusher-js's public API: it wraps `pusher.send_event` to add a
// `history` field to `pusher:subscribe` data, and listens to
// `pusher.connection.bind('message')`, which sees every decoded frame in order,
// after pusher-js has handed it to the channel. The wire contract is in the
// broker's README ("Channel history and connection recovery").

const POSITION = 'pusher_internal:position';
const RECOVERY = 'pusher_internal:recovery';

/**
 * Turns on recovery for `pusher` (a pusher-js instance, or laravel-echo's
 * `echo.connector.pusher`). Returns a handle with `state(channel)` and `disable()`.
 *
 * options.channels: which channels to track: an array of names or prefixes
 *   ending in `*` (`['private-chat-*', 'news']`), or a function `(name) => bool`;
 *   default every channel.
 * options.rewind: what a first subscription asks for: `{ count: n }` or
 *   `{ seconds: s }` (the last events kept, replayed before live ones); default none.
 * options.maxSocketIds: previous socket ids sent for exclusion (default 4).
 */
export function enableRecovery(pusher, options = {}) {
  if (!pusher || typeof pusher.send_event !== 'function' || !pusher.connection) {
    throw new TypeError('enableRecovery needs a pusher-js instance');
  }
  const wanted = matcher(options.channels);
  const maxSocketIds = options.maxSocketIds ?? 4;
  /** name -> { epoch, position, pending, notKept } */
  const channels = new Map();
  /** Socket ids of this client's earlier connections, newest last. */
  const socketIds = [];

  const remember = () => {
    const id = pusher.connection.socket_id;
    if (id && !socketIds.includes(id)) {
      socketIds.push(id);
      if (socketIds.length > maxSocketIds + 1) socketIds.shift();
    }
  };
  remember();

  const originalSendEvent = pusher.send_event;
  const sendEvent = function (event, data, channel) {
    if (event === 'pusher:subscribe' && data && typeof data.channel === 'string' && wanted(data.channel)) {
      const history = request(data.channel);
      if (history) data = { ...data, history };
    } else if (event === 'pusher:unsubscribe' && data && typeof data.channel === 'string') {
      // An unsubscription the app asked for: a later subscription starts afresh.
      channels.delete(data.channel);
    }
    return originalSendEvent.call(this, event, data, channel);
  };
  pusher.send_event = sendEvent;

  function request(name) {
    let s = channels.get(name);
    if (!s) {
      s = { epoch: null, position: null, pending: null, notKept: false };
      channels.set(name, s);
    }
    if (s.notKept) return null;
    s.pending = null;
    if (s.epoch != null && s.position != null) {
      const current = pusher.connection.socket_id;
      return {
        epoch: s.epoch,
        position: s.position,
        socket_ids: socketIds.filter((id) => id !== current).slice(-maxSocketIds),
      };
    }
    return options.rewind ? { rewind: { ...options.rewind } } : {};
  }

  const onMessage = (message) => {
    const name = message.channel;
    if (!name) return;
    const s = channels.get(name);
    if (!s || s.notKept) return;
    if (message.event === POSITION) {
      // The next event on this channel is the one at this position.
      s.pending = data(message).position;
    } else if (message.event === RECOVERY) {
      const d = data(message);
      if (d.reason === 'channel_not_kept') s.notKept = true;
      if (d.epoch != null) s.epoch = d.epoch;
      // With events to replay, their own position frames move the position.
      if (d.replayed === 0 && d.position != null) s.position = d.position;
      if (d.status === 'failed' && d.epoch == null) {
        s.epoch = null;
        s.position = null;
      }
      const channel = pusher.channel(name);
      if (channel) {
        channel.emit('pusher:recovery', d);
        if (d.status === 'recovered') channel.emit('pusher:recovered', d);
        if (d.status === 'failed') channel.emit('pusher:recovery_failed', d);
      }
    } else if (message.event.indexOf('pusher_internal:') !== 0 && message.event.indexOf('pusher:') !== 0) {
      // Delivered to the app just now (pusher-js's own listener runs first): it is the client's.
      if (s.pending != null) {
        s.position = s.pending;
        s.pending = null;
      }
    }
  };
  const onConnected = () => remember();
  pusher.connection.bind('message', onMessage);
  pusher.connection.bind('connected', onConnected);

  return {
    /** Where a tracked channel stands: `{ epoch, position }`, or null. */
    state(name) {
      const s = channels.get(name);
      return s && !s.notKept ? { epoch: s.epoch, position: s.position } : null;
    },
    /** Stops adding history requests and listening (subscriptions already made stay as they are). */
    disable() {
      if (pusher.send_event === sendEvent) pusher.send_event = originalSendEvent;
      pusher.connection.unbind('message', onMessage);
      pusher.connection.unbind('connected', onConnected);
      channels.clear();
    },
  };
}

function data(message) {
  const d = message.data;
  if (typeof d === 'string') {
    try {
      return JSON.parse(d);
    } catch {
      return {};
    }
  }
  return d || {};
}

function matcher(channels) {
  if (channels == null) return () => true;
  if (typeof channels === 'function') return channels;
  const list = Array.isArray(channels) ? channels : [channels];
  return (name) =>
    list.some((p) => (p.endsWith('*') ? name.startsWith(p.slice(0, -1)) : name === p));
}

export default enableRecovery;
