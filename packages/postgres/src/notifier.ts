/**
 * Wake-ups across processes through LISTEN/NOTIFY: one dedicated connection per `PgDatabase`
 * (outside the pool, so it is never recycled while listening), shared by every store on it.
 *
 * Notifications are hints, never the source of truth: a reader woken by one re-reads its
 * table. The connection is re-opened after an error or a server restart (backoff 50 ms
 * doubling to 2 s), every channel is LISTENed again, and every listener is called once at
 * that moment, because notifications sent while it was down are lost. Readers also poll
 * slowly, so a lost notification delays them by at most their poll period.
 */
import { createHash } from 'node:crypto';
import type pg from 'pg';
import type { PgDatabase } from './database.ts';

const notifiers = new WeakMap<PgDatabase, PgNotifier>();

/** The notifier of `db` (created on first use). */
export function notifierOf(db: PgDatabase): PgNotifier {
  let n = notifiers.get(db);
  if (!n) {
    const created = new PgNotifier(db);
    notifiers.set(db, (n = created));
    db.onClose(() => created.close());
  }
  return n;
}

/** A channel name for `kind` in `schema` (an identifier short enough for PostgreSQL's 63 bytes). */
export function channelName(kind: string, schema: string): string {
  return `herald_${kind}_${createHash('sha1').update(schema).digest('hex').slice(0, 16)}`;
}

export class PgNotifier {
  readonly #db: PgDatabase;
  readonly #listeners = new Map<string, Set<(payload: string) => void>>();
  #client: pg.Client | undefined;
  #connecting: Promise<void> | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #backoff = 50;
  #closed = false;
  /** Times the LISTEN connection was (re)opened. */
  connects = 0;

  constructor(db: PgDatabase) {
    this.#db = db;
  }

  /** Calls `fn` on every NOTIFY on `channel` (and once after each reconnect). Returns the remover. */
  listen(channel: string, fn: (payload: string) => void): () => void {
    let set = this.#listeners.get(channel);
    const fresh = !set;
    if (!set) this.#listeners.set(channel, (set = new Set()));
    set.add(fn);
    if (this.#client && fresh) void this.#client.query(`LISTEN "${channel}"`).catch(() => this.#drop());
    else this.#ensure();
    return () => {
      const s = this.#listeners.get(channel);
      if (!s) return;
      s.delete(fn);
      if (s.size === 0) {
        this.#listeners.delete(channel);
        if (this.#client) void this.#client.query(`UNLISTEN "${channel}"`).catch(() => {});
      }
      if (this.#listeners.size === 0) this.#stop();
    };
  }

  #ensure(): void {
    if (this.#closed || this.#client || this.#connecting || this.#retryTimer || this.#db.closed) return;
    if (this.#listeners.size === 0) return;
    this.#connecting = this.#connect().finally(() => {
      this.#connecting = undefined;
    });
  }

  async #connect(): Promise<void> {
    const client = this.#db.newClient();
    client.on('error', () => this.#drop(client));
    client.on('end', () => this.#drop(client));
    client.on('notification', (n) => {
      const set = this.#listeners.get(n.channel);
      if (set) for (const fn of [...set]) fn(n.payload ?? '');
    });
    try {
      await client.connect();
      for (const ch of this.#listeners.keys()) await client.query(`LISTEN "${ch}"`);
    } catch {
      void client.end().catch(() => {});
      this.#scheduleRetry();
      return;
    }
    if (this.#closed || this.#listeners.size === 0) {
      void client.end().catch(() => {});
      return;
    }
    this.#client = client;
    this.#backoff = 50;
    // Channels added while connecting: LISTEN is idempotent, so listen to every one again.
    for (const ch of this.#listeners.keys()) void client.query(`LISTEN "${ch}"`).catch(() => this.#drop(client));
    this.connects++;
    // Whatever was sent while no connection listened is lost: wake everyone once.
    for (const set of this.#listeners.values()) for (const fn of [...set]) fn('');
  }

  #drop(client?: pg.Client): void {
    const c = client ?? this.#client;
    if (c && this.#client === c) this.#client = undefined;
    if (c) void c.end().catch(() => {});
    this.#scheduleRetry();
  }

  #scheduleRetry(): void {
    if (this.#closed || this.#retryTimer || this.#listeners.size === 0) return;
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = undefined;
      this.#ensure();
    }, this.#backoff);
    this.#retryTimer.unref?.();
    this.#backoff = Math.min(2000, this.#backoff * 2);
  }

  #stop(): void {
    const c = this.#client;
    this.#client = undefined;
    if (this.#retryTimer) clearTimeout(this.#retryTimer);
    this.#retryTimer = undefined;
    if (c) void c.end().catch(() => {});
  }

  /** Closes the connection for good. */
  close(): void {
    this.#closed = true;
    this.#listeners.clear();
    this.#stop();
  }
}
