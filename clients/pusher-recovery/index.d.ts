/** What `pusher_internal:recovery` reports (also the data of the channel events below). */
export interface RecoveryNotice {
  status: 'recovered' | 'rewound' | 'subscribed' | 'failed';
  /** Set when `status` is `failed`: the app should refetch the channel's state. */
  reason?: 'channel_not_kept' | 'history_lost' | 'window_exceeded' | 'unavailable';
  epoch?: string;
  /** The channel position the client has once the replayed events are delivered. */
  position?: number;
  /** How many events follow as the replay. */
  replayed: number;
}

export interface RecoveryOptions {
  /** Names, prefixes ending in `*`, or a predicate; default every channel. */
  channels?: string[] | string | ((name: string) => boolean);
  /** What a first subscription asks for (recent events before live ones). */
  rewind?: { count: number } | { seconds: number };
  /** Previous socket ids sent for exclusion (default 4; the broker's default bound is 8). */
  maxSocketIds?: number;
}

export interface Recovery {
  /** Where a tracked channel stands, or null if it is not tracked (or not kept by the broker). */
  state(channel: string): { epoch: string | null; position: number | null } | null;
  /** Stops adding history requests and listening. */
  disable(): void;
}

/** Minimal shape of a pusher-js instance (pusher-js 7/8, or laravel-echo's `echo.connector.pusher`). */
export interface PusherLike {
  send_event(event: string, data: any, channel?: string): boolean;
  channel(name: string): { emit(event: string, data?: any): any } | undefined;
  connection: {
    socket_id?: string;
    bind(event: string, cb: (...args: any[]) => void): any;
    unbind(event: string, cb: (...args: any[]) => void): any;
  };
}

/**
 * Turns on recovery: on each reconnect the broker replays what each tracked
 * channel missed, in order, once. Channels emit `pusher:recovery` (every
 * notice), `pusher:recovered` and `pusher:recovery_failed` (refetch then).
 */
export function enableRecovery(pusher: PusherLike, options?: RecoveryOptions): Recovery;
export default enableRecovery;
