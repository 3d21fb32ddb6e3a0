/**
 * The embedded SQLite transport: a durable partitioned log in one database file, shared by
 * every process that opens it. Consumer groups divide partitions through fenced leases in the
 * same file; reading, acks, offset tracking and redelivery are core's `LogSubscription`.
 *
 * Publishing: each message is encoded once (JSON structured format) and checked against
 * `maxPayloadBytes` before anything is queued; a batch with one oversize message is refused
 * whole (`HERALD_ERR_PAYLOAD_TOO_LARGE`), nothing written. Envelopes Herald did not build or
 * validate itself (`ensureEnvelope`) are validated first (`HERALD_ERR_ENVELOPE_INVALID`).
 * Accepted batches join a bounded publish queue; all `publish()` calls made in the same turn
 * of the event loop are written in ONE `BEGIN IMMEDIATE` transaction (group commit), each
 * caller's promise resolving once that transaction committed. If that transaction fails (the write lock stayed busy past
 * `busyTimeoutMs`, disk full…), every publish in that batch rejects with the same
 * `HERALD_ERR_STORAGE` error and nothing of the batch is stored. Offsets are assigned inside the
 * transaction from a per-partition counter row, so they increase in commit order across
 * processes and never repeat, even after retention emptied a partition. A unit of work in direct
 * mode (`createSqliteUnitOfWork({ transport })`) appends on its own connection inside its own
 * transaction, through the same `LogAppender` and the same checks (`directLogOf`); it wakes this
 * transport's readers after its commit. Nothing here caches an offset that such a writer (or
 * another process) could invalidate: `knownNext`/`appends` only decide when readers query.
 *
 * Backpressure: at most `maxQueuedMessages` messages wait in the publish queue; a publish that
 * does not fit waits (FIFO) until earlier batches are written. A single batch larger than the
 * bound is admitted alone.
 *
 * Retention (off by default): records older than `maxAgeMs` are deleted, but never past the
 * slowest registered group's committed offset; `maxRecordsPerPartition` is a hard cap enforced
 * in every publish transaction, which may delete records some group has not read yet: those
 * are counted per group (`retentionDropped`). A group is registered on its first `subscribe()`.
 *
 * `close()` is idempotent and draining: queued publishes are written, subscriptions are closed
 * (draining and committing, up to `timeoutMs`), then the database is closed if the transport
 * opened it.
 */
import {
  type Clock,
  type CloudEvent,
  DEFAULT_PARTITIONS,
  type EnsureTopicOptions,
  encodeEnvelope,
  ensureEnvelope,
  HeraldError,
  isHeraldError,
  type LeaseFence,
  type LogRecord,
  type LogTransportTuning,
  type LogSource,
  LogSubscription,
  type OutgoingMessage,
  type PartitionLag,
  partitionForKey,
  type PublishReceipt,
  type SubscribeOptions,
  type Subscription,
  systemClock,
  TOPIC_NAME_RE,
  type TopicInfo,
  type Transport,
  type TransportCapabilities,
} from '@herald/core';
import { RoundRobin, tooLarge } from '@herald/core/internal';
import type { Statement } from 'better-sqlite3';
import { openDatabase, type SqliteDatabase, type SqliteSynchronous } from './database.ts';
import { assertFence, SqliteLeaseStore } from './lease-store.ts';
import { readLag } from './lag.ts';
import { type LogBatch, LogAppender } from './log-append.ts';
import { nonNegativeInt, partitionCount, positiveInt, positiveNumber } from '@herald/core/internal';

export interface SqliteRetentionOptions {
  /** Delete records older than this (ms since they were appended), never past the slowest group. Absent: keep forever. */
  readonly maxAgeMs?: number;
  /** Hard cap of records per partition, enforced at every publish; may drop records a group has not read (counted). Absent: no cap. */
  readonly maxRecordsPerPartition?: number;
  /** How often age retention runs, ms (default 1000). */
  readonly intervalMs?: number;
}

export interface SqliteTransportOptions extends LogTransportTuning {
  /** Database file (created if missing). Give `path` or `database`. */
  readonly path?: string;
  /** An already open database (shared with stores in this process); the transport does not close it. */
  readonly database?: SqliteDatabase;
  /** With `path`: 'NORMAL' (default) or 'FULL'; see docs/reference/durability.md. */
  readonly synchronous?: SqliteSynchronous;
  /** With `path`: how long a writer waits for another process's write lock, ms (default 5000). */
  readonly busyTimeoutMs?: number;
  /**
   * How often the transport looks for records appended by other processes (other connections),
   * ms (default 5). Each look is one `PRAGMA data_version` read, plus one small query per
   * subscribed topic when another connection committed. In-process appends wake readers at once.
   */
  readonly pollMs?: number;
  readonly retention?: SqliteRetentionOptions;
  readonly clock?: Clock;
}

export interface SqliteTransportStats {
  /** Write transactions on this transport's connection (publish, commit, lease, retention, topic creation). */
  readonly writeTransactions: number;
  /** Group-commit transactions written by publish. */
  readonly publishTransactions: number;
  /** `publish()` calls that were written. */
  readonly publishCalls: number;
  /** Messages written. */
  readonly publishedMessages: number;
  /** Messages waiting in the publish queue now. */
  readonly queuedMessages: number;
}

export interface RetentionResult {
  /** Records deleted. */
  readonly deleted: number;
}

interface TopicMeta {
  readonly id: number;
  readonly name: string;
  readonly partitions: number;
  readonly rr: RoundRobin;
  readonly listeners: Set<() => void>;
  /** Per partition, bumped by every local append (lets readers skip queries on a partition known empty). */
  readonly appends: Uint32Array;
  /** Per partition, the next offset last seen (by this transport's appends or the watcher). */
  readonly knownNext: Float64Array;
}

interface PendingPublish extends LogBatch<TopicMeta> {
  readonly resolve: (r: readonly PublishReceipt[]) => void;
  readonly reject: (e: unknown) => void;
}

interface PendingCommit {
  readonly topicId: number;
  readonly group: string;
  readonly partition: number;
  readonly offset: number;
  readonly fence: LeaseFence | undefined;
  readonly resolve: () => void;
  readonly reject: (e: unknown) => void;
}

const MIB = 1024 * 1024;

/**
 * What a unit of work in direct mode (`createSqliteUnitOfWork({ transport })`) uses of its
 * transport; not public API (reached through `directLogOf`, not exported from index.ts).
 */
export interface DirectLog {
  /** The transport's database (the unit of work checks it is the same file as its own). */
  readonly database: SqliteDatabase;
  /** The transport's `retention.maxRecordsPerPartition`, for the caller's `LogAppender`. */
  readonly maxRecordsPerPartition: number | undefined;
  /**
   * Inside a write transaction of `appender`'s connection: validates and encodes `messages` as
   * `publish` does (same checks, same typed errors, same partitioner), creates the topic with the
   * transport's default partition count if the file has none (in the caller's transaction), and
   * appends them. Returns the receipts and, to pass to `appended` once committed, the heads.
   * Throws `HERALD_ERR_CLOSED` once the transport is closed.
   */
  append(appender: LogAppender, topic: string, messages: readonly OutgoingMessage[], now: number): { readonly receipts: readonly PublishReceipt[]; readonly next: readonly number[] };
  /** After the caller's commit: this process's subscriptions to `topic` fetch at once (not at their next poll). Never throws. */
  appended(topic: string, next: readonly number[]): void;
}

let directLog: (transport: SqliteTransport) => DirectLog;

/** The direct-mode view of `transport` (see `DirectLog`). */
export function directLogOf(transport: SqliteTransport): DirectLog {
  return directLog(transport);
}

/** Opens (or attaches to) a Herald SQLite file and returns its transport. */
export function createSqliteTransport(options: SqliteTransportOptions): SqliteTransport {
  return new SqliteTransport(options);
}

export class SqliteTransport implements Transport {
  static {
    directLog = (t) => t.#directLog();
  }

  readonly name = 'sqlite';
  readonly capabilities: TransportCapabilities;
  /** The database this transport writes to (share it with `SqliteDeadLetterStore` / `SqliteLeaseStore`). */
  readonly database: SqliteDatabase;
  /** The lease store the transport's subscriptions divide partitions with. */
  readonly leases: SqliteLeaseStore;

  readonly #ownsDb: boolean;
  readonly #clock: Clock;
  readonly #defaultPartitions: number;
  readonly #maxPayload: number;
  readonly #leaseMs: number;
  readonly #heartbeatMs: number | undefined;
  readonly #pollMs: number;
  readonly #fetchBatch: number | undefined;
  readonly #commitIntervalMs: number | undefined;
  readonly #maxBatch: number;
  readonly #maxQueued: number;
  readonly #maxAgeMs: number | undefined;
  readonly #cap: number | undefined;
  readonly #topics = new Map<string, TopicMeta>();
  readonly #subs = new Set<LogSubscription>();
  readonly #queue: PendingPublish[] = [];
  /** Messages queued or reserved by admitted publishers. */
  #queued = 0;
  readonly #roomWaiters: Array<{ n: number; go: () => void }> = [];
  #flushScheduled = false;
  #flushing: Promise<void> | undefined;
  readonly #commits: PendingCommit[] = [];
  #commitsFlushing: Promise<void> | undefined;
  #retentionTimer: { cancel(): void } | undefined;
  #closed = false;
  #closePromise: Promise<void> | undefined;
  #publishTransactions = 0;
  #publishCalls = 0;
  #publishedMessages = 0;
  #dv: number | undefined;
  /** Appends on this transport's connection (shared logic with a unit of work in direct mode). */
  readonly #log: LogAppender;
  #watchTimer: { cancel(): void } | undefined;
  readonly #s: {
    topicByName: Statement<[string], { id: number; partitions: number }>;
    nextOffset: Statement<[number, number], { next_offset: number }>;
    fetch: Statement<[number, number, number, number]>;
    committed: Statement<[number, string, number], { committed: number }>;
    register: Statement<[number, string, number, number, number]>;
    commit: Statement<[number, string, number, number, number]>;
    dropped: Statement<[number, string], { dropped: number }>;
    droppedTotal: Statement<[number], { dropped: number | null }>;
    allTopics: Statement<[], { id: number; name: string; partitions: number }>;
    dataVersion: Statement<[]>;
    counters: Statement<[number], { partition: number; next_offset: number }>;
  };

  constructor(options: SqliteTransportOptions) {
    if (options.database === undefined && options.path === undefined) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'createSqliteTransport needs `path` or `database`');
    }
    if (options.database !== undefined && options.path !== undefined) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'createSqliteTransport takes `path` or `database`, not both');
    }
    this.#clock = options.clock ?? systemClock;
    this.#defaultPartitions = partitionCount(options.defaultPartitions ?? DEFAULT_PARTITIONS);
    this.#maxPayload = nonNegativeInt('maxPayloadBytes', options.maxPayloadBytes ?? MIB);
    this.#leaseMs = positiveNumber('leaseMs', options.leaseMs ?? 10_000);
    this.#heartbeatMs = options.heartbeatMs === undefined ? undefined : positiveNumber('heartbeatMs', options.heartbeatMs);
    this.#pollMs = positiveNumber('pollMs', options.pollMs ?? 5);
    this.#fetchBatch = options.fetchBatch;
    this.#commitIntervalMs = options.commitIntervalMs;
    this.#maxBatch = positiveInt('maxBatchMessages', options.maxBatchMessages ?? 4096);
    this.#maxQueued = positiveInt('maxQueuedMessages', options.maxQueuedMessages ?? 65_536);
    const r = options.retention ?? {};
    this.#maxAgeMs = r.maxAgeMs === undefined ? undefined : positiveNumber('retention.maxAgeMs', r.maxAgeMs);
    this.#cap = r.maxRecordsPerPartition === undefined ? undefined : positiveInt('retention.maxRecordsPerPartition', r.maxRecordsPerPartition);
    const retentionIntervalMs = positiveNumber('retention.intervalMs', r.intervalMs ?? 1000);

    if (options.database !== undefined) {
      this.database = options.database;
      this.#ownsDb = false;
    } else {
      this.database = openDatabase({
        path: options.path!,
        ...(options.synchronous !== undefined ? { synchronous: options.synchronous } : {}),
        ...(options.busyTimeoutMs !== undefined ? { busyTimeoutMs: options.busyTimeoutMs } : {}),
      });
      this.#ownsDb = true;
    }
    this.database.assertOpen();
    this.leases = new SqliteLeaseStore({ database: this.database, clock: this.#clock });
    const sync = this.database.synchronous;
    this.capabilities = Object.freeze({
      ackModel: 'offset',
      assignment: 'lease',
      consumerGroups: true,
      persistent: true,
      replay: true,
      nativeDelay: false,
      maxPayloadBytes: this.#maxPayload === 0 ? Number.POSITIVE_INFINITY : this.#maxPayload,
      multiProcess: true,
      ackDeadlineMs: 0,
      durability:
        sync === 'FULL'
          ? 'SQLite WAL, synchronous=FULL: an acknowledged publish is fsynced; it survives a process crash, an OS crash and a power loss'
          : 'SQLite WAL, synchronous=NORMAL: an acknowledged publish survives a process crash; an OS crash or power loss may roll back the last transactions committed before the WAL was synced (the file is never corrupted)',
    });

    const db = this.database.db;
    this.#s = {
      topicByName: db.prepare(`SELECT id, partitions FROM herald_topics WHERE name = ?`),
      nextOffset: db.prepare(`SELECT next_offset FROM herald_partitions WHERE topic_id = ? AND partition = ?`),
      fetch: db.prepare(`SELECT offset, key, envelope FROM herald_log WHERE topic_id = ? AND partition = ? AND offset > ? ORDER BY offset LIMIT ?`).raw(true),
      committed: db.prepare(`SELECT committed FROM herald_offsets WHERE topic_id = ? AND grp = ? AND partition = ?`),
      register: db.prepare(`INSERT OR IGNORE INTO herald_offsets (topic_id, grp, partition, committed, updated_at) VALUES (?, ?, ?, ?, ?)`),
      commit: db.prepare(
        `INSERT INTO herald_offsets (topic_id, grp, partition, committed, updated_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT (topic_id, grp, partition) DO UPDATE SET committed = excluded.committed, updated_at = excluded.updated_at
         WHERE excluded.committed > herald_offsets.committed`,
      ),
      dropped: db.prepare(`SELECT dropped FROM herald_retention_dropped WHERE topic_id = ? AND grp = ?`),
      droppedTotal: db.prepare(`SELECT sum(dropped) AS dropped FROM herald_retention_dropped WHERE topic_id = ?`),
      allTopics: db.prepare(`SELECT id, name, partitions FROM herald_topics ORDER BY id`),
      dataVersion: db.prepare(`PRAGMA data_version`).pluck(),
      counters: db.prepare(`SELECT partition, next_offset FROM herald_partitions WHERE topic_id = ?`),
    };
    this.#log = new LogAppender(this.database, this.#cap);

    if (this.#maxAgeMs !== undefined) {
      const tick = (): void => {
        if (this.#closed) return;
        // Busy or closed: the next round tries again.
        void this.runRetention()
          .catch(() => {})
          .finally(() => {
            if (!this.#closed) this.#retentionTimer = this.#clock.setTimer(tick, retentionIntervalMs);
          });
      };
      this.#retentionTimer = this.#clock.setTimer(tick, retentionIntervalMs);
    }
  }

  async ensureTopic(topic: string, options: EnsureTopicOptions = {}): Promise<TopicInfo> {
    this.#open();
    const t = this.#topic(topic, options.partitions);
    return { topic, partitions: t.partitions };
  }

  /**
   * Queues `messages` for the next group commit and resolves with their receipts (input order)
   * once it committed. Safe to call concurrently. Validation and size errors are thrown
   * before anything is queued.
   */
  async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
    this.#open();
    if (!Array.isArray(messages)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'publish takes an array of messages');
    const t = this.#topic(topic);
    const count = messages.length;
    if (count === 0) return [];
    const { partitions, keys, bodies } = this.#encodeBatch(t, messages);
    // Reserve room in the queue (FIFO behind earlier waiters); admission reserves for waiters.
    if (this.#roomWaiters.length === 0 && (this.#queued === 0 || this.#queued + count <= this.#maxQueued)) this.#queued += count;
    else await new Promise<void>((go) => this.#roomWaiters.push({ n: count, go }));
    return new Promise<readonly PublishReceipt[]>((resolve, reject) => {
      this.#queue.push({ topic: t, partitions, keys, bodies, resolve, reject });
      this.#scheduleFlush();
    });
  }

  /**
   * Validates and encodes one publish call (nothing is written): the envelope (`ensureEnvelope`),
   * its JSON encoding, `maxPayloadBytes`, the key, and the partition (murmur2 of the key, else
   * round-robin). Throws the typed error of the first bad message.
   */
  #encodeBatch(t: { readonly name: string; readonly partitions: number; readonly rr: RoundRobin }, messages: readonly OutgoingMessage[]): Omit<LogBatch, 'topic'> {
    const topic = t.name;
    const count = messages.length;
    const partitions = new Int32Array(count);
    const keys: (string | null)[] = new Array(count);
    const bodies: string[] = new Array(count);
    const max = this.#maxPayload;
    for (let i = 0; i < count; i++) {
      const m = messages[i]!;
      if (typeof m !== 'object' || m === null || typeof m.envelope !== 'object' || m.envelope === null) {
        throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `message ${i} to "${topic}" has no envelope`);
      }
      const env: CloudEvent = ensureEnvelope(m.envelope); // a WeakSet lookup for envelopes Herald built or validated
      const body = encode(env, topic);
      // UTF-8 takes at most 3 bytes per UTF-16 unit: only long strings need counting.
      if (max > 0 && body.length * 3 > max) {
        const size = Buffer.byteLength(body, 'utf8');
        if (size > max) throw tooLarge(topic, env.id, size, max);
      }
      const key = m.key ?? env.partitionkey;
      if (key !== undefined && typeof key !== 'string') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `message ${i} to "${topic}": key must be a string`);
      partitions[i] = key === undefined ? t.rr.next(t.partitions) : partitionForKey(key, t.partitions);
      keys[i] = key ?? null;
      bodies[i] = body;
    }
    return { partitions, keys, bodies };
  }

  subscribe(topic: string, options: SubscribeOptions): Subscription {
    this.#open();
    if (typeof options?.group !== 'string' || options.group.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'subscribe needs a group');
    const t = this.#topic(topic);
    const group = options.group;
    const db = this.database;
    const s = this.#s;
    // Register the group: it pins retention from now on. A 'latest' group starts at today's head.
    db.immediate(() => {
      const now = this.#clock.now();
      for (let p = 0; p < t.partitions; p++) {
        const start = options.startFrom === 'latest' ? (s.nextOffset.get(t.id, p)?.next_offset ?? 0) - 1 : -1;
        s.register.run(t.id, group, p, start, now);
      }
    });
    const scope = `log:${topic}:${group}`;
    const readAhead = new ReadAhead(
      t,
      this.#fetchBatch ?? 256,
      () => this.#dataVersion(),
      (p, after, limit) => db.read(() => (s.fetch.all(t.id, p, after, limit) as [number, string | null, unknown][]).map(toRecord)),
    );
    const source: LogSource = {
      partitions: t.partitions,
      committed: (p) => db.read(() => s.committed.get(t.id, group, p)?.committed ?? -1),
      // Where a 'latest' group starts: the head as of the group's registration (above), so records
      // published between subscribe() and the partition's assignment are not skipped.
      head: (p) => db.read(() => s.committed.get(t.id, group, p)?.committed ?? (s.nextOffset.get(t.id, p)?.next_offset ?? 0) - 1),
      fetch: (p, after, limit) => readAhead.fetch(p, after, limit),
      commit: (p, offset, fence) =>
        this.#commitOffset({
          topicId: t.id,
          group,
          partition: p,
          offset,
          // Checked against this partition's lease, whatever scope the caller's fence names.
          fence: fence ? { scope, resource: String(p), owner: fence.owner, epoch: fence.epoch } : undefined,
        }),
      onAppend: (l) => {
        t.listeners.add(l);
        this.#startWatching();
        return () => t.listeners.delete(l);
      },
    };
    const sub = new LogSubscription({
      ...options,
      topic,
      source,
      clock: this.#clock,
      ownership: { kind: 'lease', store: this.leases, leaseMs: this.#leaseMs, ...(this.#heartbeatMs !== undefined ? { heartbeatMs: this.#heartbeatMs } : {}) },
      // The watcher (#startWatching) wakes readers on other processes' appends; the subscription's own
      // poll is only a safety net (e.g. to resume a partition after a late lease renewal).
      pollMs: Math.max(100, this.#pollMs),
      ...(this.#fetchBatch !== undefined ? { fetchBatch: this.#fetchBatch } : {}),
      ...(this.#commitIntervalMs !== undefined ? { commitIntervalMs: this.#commitIntervalMs } : {}),
    });
    this.#subs.add(sub);
    void sub.closed.then(
      () => this.#subs.delete(sub),
      () => this.#subs.delete(sub),
    );
    return sub;
  }

  /**
   * Records of `topic` deleted by the hard size cap before `group` committed them; without
   * `group`, the sum over every group. 0 for an unknown topic.
   */
  retentionDropped(topic: string, group?: string): number {
    this.#open();
    const row = this.database.read(() => this.#s.topicByName.get(topic));
    if (!row) return 0;
    return this.database.read(() =>
      group === undefined ? (this.#s.droppedTotal.get(row.id)?.dropped ?? 0) : (this.#s.dropped.get(row.id, group)?.dropped ?? 0),
    );
  }

  /**
   * Forgets `group` on `topic`: its committed offsets and dropped counts are deleted, so
   * retention stops waiting for it. A member still running re-creates its offsets at its next
   * commit. Returns whether the group was known.
   */
  async forgetGroup(topic: string, group: string): Promise<boolean> {
    this.#open();
    const row = this.database.read(() => this.#s.topicByName.get(topic));
    if (!row) return false;
    return this.database.immediateAsync(() => {
      const n = this.database.statement(`DELETE FROM herald_offsets WHERE topic_id = ? AND grp = ?`).run(row.id, group).changes;
      this.database.statement(`DELETE FROM herald_retention_dropped WHERE topic_id = ? AND grp = ?`).run(row.id, group);
      return n > 0;
    });
  }

  /**
   * Applies retention to every topic in the file now (it also runs every `intervalMs` when
   * `maxAgeMs` is set): deletes records older than `maxAgeMs` up to the slowest group's
   * committed offset, and enforces the hard cap. One short write transaction per topic.
   */
  async runRetention(): Promise<RetentionResult> {
    this.#open();
    if (this.#maxAgeMs === undefined && this.#cap === undefined) return { deleted: 0 };
    let deleted = 0;
    const topics = this.database.read(() => this.#s.allTopics.all());
    for (const t of topics) {
      deleted += await this.database.immediateAsync(() => {
        let n = 0;
        const cutoff = this.#maxAgeMs === undefined ? undefined : this.#clock.now() - this.#maxAgeMs;
        for (let p = 0; p < t.partitions; p++) n += this.#log.trim(t.id, p, cutoff);
        return n;
      });
    }
    return { deleted };
  }

  /** Consumer lag per (topic, group, partition), read from the file (every process's groups): `LagSource`. */
  async lag(filter?: { readonly group?: string; readonly topic?: string }): Promise<readonly PartitionLag[]> {
    this.#open();
    return readLag(this.database, filter);
  }

  /** Counters for tests, benchmarks and metrics. */
  stats(): SqliteTransportStats {
    return {
      writeTransactions: this.database.writeTransactions,
      publishTransactions: this.#publishTransactions,
      publishCalls: this.#publishCalls,
      publishedMessages: this.#publishedMessages,
      queuedMessages: this.#queued,
    };
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.#closed = true;
      this.#retentionTimer?.cancel();
      this.#watchTimer?.cancel();
      this.#closePromise = this.#close(options);
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(options: { timeoutMs?: number }): Promise<void> {
    // Accepted publishes are written first.
    while (this.#queued > 0 || this.#roomWaiters.length > 0 || this.#flushing) {
      await (this.#flushing ?? this.#flush());
      await new Promise<void>((r) => setImmediate(r));
    }
    await Promise.all([...this.#subs].map((s) => s.close(options)));
    while (this.#commitsFlushing || this.#commits.length > 0) await (this.#commitsFlushing ?? this.#flushCommits());
    await this.leases.close();
    if (this.#ownsDb) this.database.close();
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#flushing) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      void this.#flush();
    });
  }

  /**
   * Writes the queue, `maxBatchMessages` at most per transaction, until it is empty. One flush
   * runs at a time; publishes arriving meanwhile join the next transaction. The batch is taken
   * when the write lock is held, so everything queued while waiting for it goes in.
   */
  #flush(): Promise<void> {
    if (this.#flushing) return this.#flushing;
    if (this.#queue.length === 0) return Promise.resolve();
    const run = async (): Promise<void> => {
      while (this.#queue.length > 0) {
        let batch: PendingPublish[] = [];
        let receipts: PublishReceipt[][] | undefined;
        let failure: unknown;
        try {
          if (this.database.closed) throw new HeraldError('HERALD_ERR_CLOSED', 'sqlite transport is closed');
          const written = await this.database.immediateAsync(() => {
            batch = this.#take();
            return this.#log.append(batch, this.#clock.now());
          });
          receipts = written.receipts;
          for (const [t, next] of written.heads) this.#advance(t, next);
        } catch (e) {
          failure = e;
          if (batch.length === 0) batch = this.#take(); // the lock never came: fail the head of the queue
        }
        let n = 0;
        for (const b of batch) n += b.bodies.length;
        this.#queued -= n;
        this.#admitWaiters();
        if (receipts) {
          this.#publishTransactions++;
          this.#publishCalls += batch.length;
          this.#publishedMessages += n;
          const touched = new Set<TopicMeta>();
          for (let i = 0; i < batch.length; i++) {
            touched.add(batch[i]!.topic);
            batch[i]!.resolve(receipts[i]!);
          }
          for (const t of touched) for (const l of t.listeners) l();
        } else {
          for (const b of batch) b.reject(failure);
        }
        // Let the callers' continuations (and new publishes) run before the next batch.
        if (this.#queue.length > 0) await new Promise<void>((r) => setImmediate(r));
      }
    };
    this.#flushing = run().finally(() => {
      this.#flushing = undefined;
      if (this.#queue.length > 0) this.#scheduleFlush();
    });
    return this.#flushing;
  }

  /** Takes the next batch off the queue: whole publish calls, up to `maxBatchMessages` (at least one call). */
  #take(): PendingPublish[] {
    let n = 0;
    let take = 0;
    while (take < this.#queue.length) {
      const size = this.#queue[take]!.bodies.length;
      if (take > 0 && n + size > this.#maxBatch) break;
      n += size;
      take++;
    }
    return this.#queue.splice(0, take);
  }

  /**
   * A fenced offset commit. Commits requested in the same turn of the event loop (several
   * partitions, several subscriptions) share one write transaction; each is checked against
   * its own lease inside it, and a stale one fails alone with `HERALD_ERR_LEASE_LOST`.
   */
  #commitOffset(c: Omit<PendingCommit, 'resolve' | 'reject'>): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      this.#commits.push({ ...c, resolve, reject });
      if (this.#commits.length === 1 && !this.#commitsFlushing) setImmediate(() => void this.#flushCommits());
    });
  }

  #flushCommits(): Promise<void> {
    if (this.#commitsFlushing) return this.#commitsFlushing;
    const run = async (): Promise<void> => {
      while (this.#commits.length > 0) {
        let batch: PendingCommit[] = [];
        const failed = new Map<PendingCommit, unknown>();
        try {
          if (this.database.closed) throw new HeraldError('HERALD_ERR_CLOSED', 'sqlite transport is closed');
          await this.database.immediateAsync(() => {
            batch = this.#commits.splice(0);
            const now = this.#clock.now();
            for (const c of batch) {
              if (c.fence) {
                try {
                  assertFence(this.database, c.fence);
                } catch (e) {
                  failed.set(c, e);
                  continue;
                }
              }
              this.#s.commit.run(c.topicId, c.group, c.partition, c.offset, now);
            }
          });
          for (const c of batch) {
            const e = failed.get(c);
            if (e === undefined) c.resolve();
            else c.reject(e);
          }
        } catch (e) {
          if (batch.length === 0) batch = this.#commits.splice(0);
          for (const c of batch) c.reject(e);
        }
      }
    };
    this.#commitsFlushing = run().finally(() => {
      this.#commitsFlushing = undefined;
      if (this.#commits.length > 0) setImmediate(() => void this.#flushCommits());
    });
    return this.#commitsFlushing;
  }

  #admitWaiters(): void {
    while (this.#roomWaiters.length > 0) {
      const w = this.#roomWaiters[0]!;
      if (this.#queued > 0 && this.#queued + w.n > this.#maxQueued) break;
      this.#roomWaiters.shift();
      this.#queued += w.n; // reserved now; the waiter enqueues in its continuation
      w.go();
    }
  }

  #directLog(): DirectLog {
    return {
      database: this.database,
      maxRecordsPerPartition: this.#cap,
      append: (appender, topic, messages, now) => {
        this.#open();
        if (!Array.isArray(messages)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'publish takes an array of messages');
        let t: { readonly id: number; readonly name: string; readonly partitions: number; readonly rr: RoundRobin } | undefined = this.#knownTopic(topic);
        if (!t) {
          // Not committed in the file yet: created in the caller's transaction (and rolled back with it).
          const row = appender.ensureTopic(topic, this.#defaultPartitions, now);
          t = { id: row.id, name: topic, partitions: row.partitions, rr: new RoundRobin() };
        }
        if (messages.length === 0) return { receipts: [], next: [] };
        const { partitions, keys, bodies } = this.#encodeBatch(t, messages);
        const { receipts, heads } = appender.append([{ topic: t, partitions, keys, bodies }], now);
        return { receipts: receipts[0]!, next: heads.get(t)! };
      },
      appended: (topic, next) => {
        if (this.#closed || this.database.closed) return;
        try {
          const t = this.#knownTopic(topic);
          if (!t) return;
          this.#advance(t, next);
          for (const l of [...t.listeners]) l();
        } catch {
          // the watcher notices the commit at its next poll
        }
      },
    };
  }

  /** After a commit that appended to `t` (on any connection of this process): readers of the touched partitions query again. */
  #advance(t: TopicMeta, next: readonly number[]): void {
    for (let p = 0; p < next.length; p++) {
      if (next[p]! < 0) continue;
      t.appends[p]!++;
      if (next[p]! > t.knownNext[p]!) t.knownNext[p] = next[p]!;
    }
  }

  #topic(name: string, partitions?: number): TopicMeta {
    let t = this.#knownTopic(name);
    if (!t) {
      const wanted = partitions === undefined ? this.#defaultPartitions : partitionCount(partitions);
      const row = this.database.immediate(() => this.#log.ensureTopic(name, wanted, this.#clock.now()));
      t = this.#remember(name, row);
    }
    if (partitions !== undefined && partitions !== t.partitions) {
      throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `topic "${name}" has ${t.partitions} partitions, not ${partitions}`, {
        details: { topic: name, partitions: t.partitions, requested: partitions },
      });
    }
    return t;
  }

  /** The topic as this process knows it, else as committed in the file; undefined when the file has no such topic. Never writes. */
  #knownTopic(name: string): TopicMeta | undefined {
    const t = this.#topics.get(name);
    if (t) return t;
    if (typeof name !== 'string' || !TOPIC_NAME_RE.test(name)) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(name)})`);
    }
    const row = this.database.read(() => this.#s.topicByName.get(name));
    return row && this.#remember(name, row);
  }

  #remember(name: string, row: { id: number; partitions: number }): TopicMeta {
    const t: TopicMeta = {
      id: row.id,
      name,
      partitions: row.partitions,
      rr: new RoundRobin(),
      listeners: new Set(),
      appends: new Uint32Array(row.partitions),
      knownNext: new Float64Array(row.partitions).fill(-1),
    };
    this.#topics.set(name, t);
    return t;
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'sqlite transport is closed');
  }

  /**
   * Cross-process wake-ups: every `pollMs`, if another connection committed (`data_version`
   * moved), reads the partition counters of each topic someone here is reading and wakes its
   * readers when one moved. Runs while any subscription listens.
   */
  #startWatching(): void {
    if (this.#watchTimer || this.#closed) return;
    let lastVersion = -1;
    const tick = (): void => {
      this.#watchTimer = undefined;
      if (this.#closed || this.database.closed) return;
      let listening = false;
      try {
        const version = this.#dataVersion();
        if (version !== lastVersion) {
          lastVersion = version;
          for (const t of this.#topics.values()) {
            if (t.listeners.size === 0) continue;
            listening = true;
            let moved = false;
            for (const r of this.database.read(() => this.#s.counters.all(t.id))) {
              if (r.next_offset > t.knownNext[r.partition]!) {
                t.knownNext[r.partition] = r.next_offset;
                t.appends[r.partition]!++;
                moved = true;
              }
            }
            if (moved) for (const l of [...t.listeners]) l();
          }
        } else {
          for (const t of this.#topics.values()) if (t.listeners.size > 0) listening = true;
        }
      } catch {
        listening = true; // busy or I/O: try again next round
      }
      if (listening) this.#watchTimer = this.#clock.setTimer(tick, this.#pollMs);
    };
    this.#watchTimer = this.#clock.setTimer(tick, this.#pollMs);
  }

  /**
   * `PRAGMA data_version`: changes when another connection (another process, or another
   * transport in this one) committed. Read at most once per turn of the event loop.
   */
  #dataVersion(): number {
    if (this.#dv === undefined) {
      this.#dv = this.database.read(() => this.#s.dataVersion.get() as number);
      setImmediate(() => {
        this.#dv = undefined;
      });
    }
    return this.#dv;
  }
}

/**
 * Per-partition read-ahead for one subscription. The reader often asks for a handful of records
 * (one ack frees one slot); each query fetches at least `batch` and the rest is served from
 * memory. Safe because a partition's visible records are always a gap-free run of offsets:
 * offsets are assigned under the write lock and commit in order, so the records after a cached
 * window's start cannot change (retention only deletes, and re-reading a deleted record once
 * more is harmless under at-least-once).
 *
 * A caught-up reader is woken by every ack; to avoid one empty query per partition each time,
 * a partition found empty stays "known empty" until this transport appends to it or another
 * connection commits anything (`PRAGMA data_version` moves).
 */
class ReadAhead {
  readonly #windows: Array<{ rows: readonly LogRecord[]; at: number } | undefined>;
  readonly #empty: Array<{ after: number; appends: number; dataVersion: number } | undefined>;
  readonly #topic: TopicMeta;
  readonly #batch: number;
  readonly #dataVersion: () => number;
  readonly #query: (p: number, after: number, limit: number) => readonly LogRecord[];

  constructor(topic: TopicMeta, batch: number, dataVersion: () => number, query: (p: number, after: number, limit: number) => readonly LogRecord[]) {
    this.#topic = topic;
    this.#windows = new Array(topic.partitions);
    this.#empty = new Array(topic.partitions);
    this.#batch = batch;
    this.#dataVersion = dataVersion;
    this.#query = query;
  }

  fetch(p: number, after: number, limit: number): readonly LogRecord[] {
    let w = this.#windows[p];
    if (w) {
      // Skip what the reader has passed; the window is valid only if it resumes right after `after`.
      while (w.at < w.rows.length && w.rows[w.at]!.offset <= after) w.at++;
      if (w.at === 0 || w.at >= w.rows.length || w.rows[w.at - 1]!.offset !== after) w = this.#windows[p] = undefined;
    }
    if (!w) {
      const appends = this.#topic.appends[p]!;
      const dataVersion = this.#dataVersion();
      const e = this.#empty[p];
      if (e && e.after === after && e.appends === appends && e.dataVersion === dataVersion) return [];
      const rows = this.#query(p, after, Math.max(limit, this.#batch));
      this.#empty[p] = rows.length === 0 ? { after, appends, dataVersion } : undefined;
      if (rows.length <= limit) return rows;
      w = this.#windows[p] = { rows, at: 0 };
    }
    const out = w.rows.slice(w.at, w.at + limit);
    w.at += out.length;
    if (w.at >= w.rows.length) this.#windows[p] = undefined;
    return out;
  }
}

function toRecord(row: [number, string | null, unknown]): LogRecord {
  const body = row[2];
  return {
    offset: row[0],
    key: row[1] ?? undefined,
    raw: typeof body === 'string' ? body : Buffer.isBuffer(body) ? body.toString('utf8') : String(body ?? ''),
  };
}

function encode(env: CloudEvent, topic: string): string {
  try {
    return encodeEnvelope(env);
  } catch (cause) {
    if (isHeraldError(cause)) throw cause;
    throw new HeraldError('HERALD_ERR_ENVELOPE_INVALID', `envelope "${String(env.id)}" to "${topic}" cannot be encoded as JSON: ${(cause as Error).message}`, {
      cause,
      details: { topic, id: env.id },
    });
  }
}

