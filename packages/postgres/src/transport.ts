/**
 * The PostgreSQL transport, for teams that have only PostgreSQL: a durable partitioned log in
 * tables of one schema, shared by every process connected to it. Consumer groups divide
 * partitions through fenced leases in the same schema (`PostgresLeaseStore`); reading, acks,
 * offset tracking and redelivery are core's `LogSubscription`.
 *
 * Publishing: each message is encoded once (JSON structured format) and checked against
 * `maxPayloadBytes` before anything is queued; a batch with one oversize message is refused
 * whole (`HERALD_ERR_PAYLOAD_TOO_LARGE`). Accepted batches join a bounded publish queue; every
 * `publish()` made while the previous write ran is written by ONE statement (group commit, an
 * implicit transaction): it locks the counter rows of the partitions it writes to
 * (`herald_partitions`, in a fixed order, so two publishers never deadlock), takes consecutive
 * offsets from them, inserts every record and sends ONE `NOTIFY`. If it fails, every publish in
 * that batch rejects with the same `HERALD_ERR_STORAGE` error and nothing of it is stored.
 *
 * Visibility: a partition's counter row stays locked until the publishing transaction ends, so
 * the next publisher to that partition takes its offsets only after the previous one committed
 * (or rolled back, giving its offsets back): the records of a partition become visible in
 * offset order and a reader that resumes "after offset o" never skips one. No snapshot-xmin
 * limit is needed for this log; docs/explanation/postgres-global-order.md has the argument.
 *
 * Wake-ups: this transport's publishes wake its readers at once; other processes' publishes
 * through LISTEN/NOTIFY (at most one NOTIFY per group commit), and a `pollMs` safety net.
 *
 * Retention (off by default): records older than `maxAgeMs` are deleted, never past the slowest
 * registered group's committed offset; `maxRecordsPerPartition` is a hard cap, enforced by the
 * same periodic run, which may delete records a group has not read: counted per group
 * (`retentionDropped`). A group is registered on its first `subscribe()`.
 *
 * Lag (`LagSource`): `lag()` reads every registered group's committed offsets against the
 * partition heads in one read-only statement (lag.ts).
 *
 * `close()` is idempotent and draining: queued publishes are written, subscriptions closed
 * (draining and committing, up to `timeoutMs`), then the pool is closed if the transport opened it.
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
  type LagSource,
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
import { DeferredSubscription, nonNegativeInt, partitionCount, planRetention, positiveInt, positiveNumber, retentionDue, RoundRobin, tooLarge } from '@herald/core/internal';
import { type PgDatabase, type PgDatabaseSource, resolveDatabase } from './database.ts';
import { leaseLost, PostgresLeaseStore } from './lease-store.ts';
import { Admission } from './admission.ts';
import { type LagFilter, readPostgresLag } from './lag.ts';
import { ensureMigrated } from './migrations.ts';
import { channelName, notifierOf } from './notifier.ts';
import { LOG_COMPONENT } from './schema.ts';

export interface PostgresRetentionOptions {
  /** Delete records older than this (ms since appended), never past the slowest group. Absent: keep forever. */
  readonly maxAgeMs?: number;
  /** Hard cap of records per partition, enforced by each retention run; may drop records a group has not read (counted). */
  readonly maxRecordsPerPartition?: number;
  /** How often retention runs, ms (default 1000). */
  readonly intervalMs?: number;
}

export type PostgresTransportOptions = PgDatabaseSource & LogTransportTuning & {
  /** Safety-net poll for records of other processes when a NOTIFY was missed, ms (default 250). */
  readonly pollMs?: number;
  readonly retention?: PostgresRetentionOptions;
  readonly clock?: Clock;
};

export interface PostgresTransportStats {
  readonly publishTransactions: number;
  readonly publishCalls: number;
  readonly publishedMessages: number;
  readonly queuedMessages: number;
}

interface TopicMeta {
  readonly id: number;
  readonly name: string;
  readonly partitions: number;
  readonly rr: RoundRobin;
  readonly listeners: Set<() => void>;
  /** Per partition, bumped by every append this transport knows of (local, or a NOTIFY). */
  readonly appends: Uint32Array;
}

interface PendingPublish {
  readonly topic: TopicMeta;
  readonly partitions: Int32Array;
  readonly keys: (string | null)[];
  readonly bodies: string[];
  readonly resolve: (r: readonly PublishReceipt[]) => void;
  readonly reject: (e: unknown) => void;
}

const MIB = 1024 * 1024;
let memberSeq = 0;

/** Opens (or attaches to) a Herald PostgreSQL schema and returns its transport. */
export function createPostgresTransport(options: PostgresTransportOptions): PostgresTransport {
  return new PostgresTransport(options);
}

export class PostgresTransport implements Transport, LagSource {
  readonly name = 'postgres';
  readonly capabilities: TransportCapabilities;
  readonly database: PgDatabase;
  /** The lease store the subscriptions divide partitions with (same schema). */
  readonly leases: PostgresLeaseStore;
  readonly #owned: boolean;
  readonly #clock: Clock;
  readonly #ready: Promise<void>;
  readonly #channel: string;
  readonly #defaultPartitions: number;
  readonly #maxPayload: number;
  readonly #leaseMs: number;
  readonly #heartbeatMs: number | undefined;
  readonly #pollMs: number;
  readonly #fetchBatch: number;
  readonly #commitIntervalMs: number | undefined;
  readonly #maxBatch: number;
  readonly #maxAgeMs: number | undefined;
  readonly #cap: number | undefined;
  readonly #topics = new Map<string, TopicMeta>();
  readonly #topicsById = new Map<number, TopicMeta>();
  readonly #pendingTopics = new Map<string, Promise<TopicMeta>>();
  readonly #subs = new Set<Subscription>();
  readonly #queue: PendingPublish[] = [];
  readonly #admission: Admission;
  #flushScheduled = false;
  #flushing: Promise<void> | undefined;
  #retentionTimer: { cancel(): void } | undefined;
  #unlisten: (() => void) | undefined;
  #closed = false;
  #closePromise: Promise<void> | undefined;
  #stats = { publishTransactions: 0, publishCalls: 0, publishedMessages: 0 };

  constructor(options: PostgresTransportOptions) {
    const { database, owned } = resolveDatabase(options);
    this.database = database;
    this.#owned = owned;
    this.#clock = options.clock ?? systemClock;
    this.#defaultPartitions = partitionCount(options.defaultPartitions ?? DEFAULT_PARTITIONS);
    this.#maxPayload = nonNegativeInt('maxPayloadBytes', options.maxPayloadBytes ?? MIB);
    this.#leaseMs = positiveNumber('leaseMs', options.leaseMs ?? 10_000);
    this.#heartbeatMs = options.heartbeatMs === undefined ? undefined : positiveNumber('heartbeatMs', options.heartbeatMs);
    this.#pollMs = positiveNumber('pollMs', options.pollMs ?? 250);
    this.#fetchBatch = positiveInt('fetchBatch', options.fetchBatch ?? 256);
    this.#commitIntervalMs = options.commitIntervalMs;
    this.#maxBatch = positiveInt('maxBatchMessages', options.maxBatchMessages ?? 4096);
    this.#admission = new Admission(positiveInt('maxQueuedMessages', options.maxQueuedMessages ?? 65_536));
    const r = options.retention ?? {};
    this.#maxAgeMs = r.maxAgeMs === undefined ? undefined : positiveNumber('retention.maxAgeMs', r.maxAgeMs);
    this.#cap = r.maxRecordsPerPartition === undefined ? undefined : positiveInt('retention.maxRecordsPerPartition', r.maxRecordsPerPartition);
    const retentionIntervalMs = positiveNumber('retention.intervalMs', r.intervalMs ?? 1000);
    this.#channel = channelName('log', database.schema);
    this.leases = new PostgresLeaseStore({ database, clock: this.#clock });
    this.#ready = ensureMigrated(database, [LOG_COMPONENT]);
    this.#ready.catch(() => {});
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
        'PostgreSQL: a publish is acknowledged after its transaction committed; with synchronous_commit=on (the default) the commit record is flushed to the WAL on disk, so it survives a server crash, an OS crash and a power loss (see docs/reference/durability.md)',
    });
    if (this.#maxAgeMs !== undefined || this.#cap !== undefined) {
      const tick = (): void => {
        if (this.#closed) return;
        void this.runRetention()
          .catch(() => {})
          .finally(() => {
            if (!this.#closed) this.#retentionTimer = this.#clock.setTimer(tick, retentionIntervalMs, { unref: true });
          });
      };
      this.#retentionTimer = this.#clock.setTimer(tick, retentionIntervalMs, { unref: true });
    }
  }

  async ensureTopic(topic: string, options: EnsureTopicOptions = {}): Promise<TopicInfo> {
    this.#open();
    const t = await this.#topic(topic, options.partitions);
    return { topic, partitions: t.partitions };
  }

  /**
   * Queues `messages` for the next group commit and resolves with their receipts (input order)
   * once it committed. Safe to call concurrently. Validation and size errors are thrown before
   * anything is queued.
   */
  async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
    this.#open();
    if (!Array.isArray(messages)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'publish takes an array of messages');
    const t = this.#topics.get(topic) ?? (await this.#topic(topic));
    const count = messages.length;
    if (count === 0) return [];
    const partitions = new Int32Array(count);
    const keys: (string | null)[] = new Array(count);
    const bodies: string[] = new Array(count);
    const max = this.#maxPayload;
    for (let i = 0; i < count; i++) {
      const m = messages[i]!;
      if (typeof m !== 'object' || m === null || typeof m.envelope !== 'object' || m.envelope === null) {
        throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `message ${i} to "${topic}" has no envelope`);
      }
      const env: CloudEvent = ensureEnvelope(m.envelope);
      const body = encode(env, topic);
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
    await this.#admission.acquire(count);
    return new Promise<readonly PublishReceipt[]>((resolve, reject) => {
      this.#queue.push({ topic: t, partitions, keys, bodies, resolve, reject });
      this.#scheduleFlush();
    });
  }

  subscribe(topic: string, options: SubscribeOptions): Subscription {
    this.#open();
    if (typeof options?.group !== 'string' || options.group.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'subscribe needs a group');
    if (typeof topic !== 'string' || !TOPIC_NAME_RE.test(topic)) {
      throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(topic)})`);
    }
    const memberId = options.memberId ?? `m-${process.pid}-${Date.now().toString(36)}-${(memberSeq++).toString(36)}`;
    let wake: (() => void) | undefined;
    const sub: DeferredSubscription<LogSubscription> = new DeferredSubscription<LogSubscription>(
      topic,
      options.group,
      memberId,
      async () => {
        // Set up (topic, group registration), retrying while the server is unreachable.
        for (let failures = 0; ; failures++) {
          if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'postgres transport is closed');
          try {
            const t = await this.#topic(topic);
            await this.#register(t, options.group, options.startFrom === 'latest');
            return this.#logSubscription(t, { ...options, memberId });
          } catch (e) {
            options.onError?.(e);
            if (isHeraldError(e) && !e.retryable) throw e;
            const stopped = await new Promise<boolean>((resolve) => {
              const timer = this.#clock.setTimer(() => resolve(false), Math.min(2000, 100 * 2 ** Math.min(5, failures)), { unref: true });
              wake = () => {
                timer.cancel();
                resolve(true);
              };
            });
            wake = undefined;
            if (stopped) return undefined;
          }
        }
      },
      () => wake?.(),
    );
    this.#subs.add(sub);
    void sub.closed.then(
      () => this.#subs.delete(sub),
      () => this.#subs.delete(sub),
    );
    return sub;
  }

  #logSubscription(t: TopicMeta, options: SubscribeOptions): LogSubscription {
    const group = options.group;
    const scope = `log:${t.name}:${group}`;
    const db = this.database;
    const readAhead = new ReadAhead(t, this.#fetchBatch, this.#pollMs, (p, after, limit) => this.#fetch(t, p, after, limit));
    const source: LogSource = {
      partitions: t.partitions,
      committed: async (p) => {
        const r = await db.query<{ committed: string }>(`SELECT committed FROM herald_offsets WHERE topic_id = $1 AND grp = $2 AND partition = $3`, [t.id, group, p]);
        return r.rows[0] === undefined ? -1 : Number(r.rows[0].committed);
      },
      head: async (p) => {
        const r = await db.query<{ v: string }>(
          `SELECT coalesce((SELECT committed FROM herald_offsets WHERE topic_id = $1 AND grp = $2 AND partition = $3),
                           (SELECT next_offset - 1 FROM herald_partitions WHERE topic_id = $1 AND partition = $3), -1) AS v`,
          [t.id, group, p],
        );
        return Number(r.rows[0]!.v);
      },
      fetch: (p, after, limit) => readAhead.fetch(p, after, limit),
      commit: (p, offset, fence) => this.#commit(t, group, p, offset, fence ? { scope, resource: String(p), owner: fence.owner, epoch: fence.epoch } : undefined),
      onAppend: (l) => {
        t.listeners.add(l);
        this.#listen();
        return () => t.listeners.delete(l);
      },
    };
    return new LogSubscription({
      ...options,
      topic: t.name,
      source,
      clock: this.#clock,
      ownership: { kind: 'lease', store: this.leases, leaseMs: this.#leaseMs, ...(this.#heartbeatMs !== undefined ? { heartbeatMs: this.#heartbeatMs } : {}) },
      pollMs: this.#pollMs,
      fetchBatch: this.#fetchBatch,
      ...(this.#commitIntervalMs !== undefined ? { commitIntervalMs: this.#commitIntervalMs } : {}),
    });
  }

  async #fetch(t: TopicMeta, p: number, after: number, limit: number): Promise<readonly LogRecord[]> {
    const r = await this.database.query<{ offset: string; key: string | null; envelope: string }>(
      `SELECT "offset", key, envelope FROM herald_log WHERE topic_id = $1 AND partition = $2 AND "offset" > $3 ORDER BY "offset" LIMIT $4`,
      [t.id, p, after, limit],
    );
    return r.rows.map((x) => ({ offset: Number(x.offset), key: x.key ?? undefined, raw: x.envelope }));
  }

  /** A fenced offset commit: one statement that writes only if the lease row still names this owner and epoch (read FOR SHARE). */
  async #commit(t: TopicMeta, group: string, p: number, offset: number, fence: LeaseFence | undefined): Promise<void> {
    if (!fence) {
      await this.database.query(
        `INSERT INTO herald_offsets (topic_id, grp, partition, committed, updated_at) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (topic_id, grp, partition) DO UPDATE SET committed = excluded.committed, updated_at = excluded.updated_at WHERE excluded.committed > herald_offsets.committed`,
        [t.id, group, p, offset, this.#clock.now()],
      );
      return;
    }
    const r = await this.database.query<{ owner: string | null; epoch: string | null; ok: boolean }>(
      `WITH l AS (SELECT owner, epoch FROM herald_leases WHERE scope = $6 AND resource = $7 FOR SHARE),
            w AS (INSERT INTO herald_offsets (topic_id, grp, partition, committed, updated_at)
                  SELECT $1, $2, $3, $4, $5 FROM l WHERE l.owner = $8 AND l.epoch = $9
                  ON CONFLICT (topic_id, grp, partition) DO UPDATE SET committed = excluded.committed, updated_at = excluded.updated_at
                  WHERE excluded.committed > herald_offsets.committed RETURNING 1)
       SELECT l.owner, l.epoch, (l.owner = $8 AND l.epoch = $9) AS ok FROM (SELECT 1) one LEFT JOIN l ON true`,
      [t.id, group, p, offset, this.#clock.now(), fence.scope, fence.resource, fence.owner, fence.epoch],
    );
    const row = r.rows[0]!;
    if (row.ok !== true) throw leaseLost(fence, row.owner === null && row.epoch === null ? undefined : { owner: row.owner, epoch: row.epoch ?? 0 });
  }

  async #register(t: TopicMeta, group: string, latest: boolean): Promise<void> {
    await this.database.query(
      `INSERT INTO herald_offsets (topic_id, grp, partition, committed, updated_at)
       SELECT topic_id, $2, partition, CASE WHEN $3 THEN next_offset - 1 ELSE -1 END, $4 FROM herald_partitions WHERE topic_id = $1
       ON CONFLICT (topic_id, grp, partition) DO NOTHING`,
      [t.id, group, latest, this.#clock.now()],
    );
  }

  /** The topic's metadata, creating the topic (and its counter rows) when needed. */
  async #topic(name: string, partitions?: number): Promise<TopicMeta> {
    let t = this.#topics.get(name);
    if (!t) {
      if (typeof name !== 'string' || !TOPIC_NAME_RE.test(name)) {
        throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(name)})`);
      }
      const wanted = partitions === undefined ? this.#defaultPartitions : partitionCount(partitions);
      let pending = this.#pendingTopics.get(name);
      if (!pending) {
        pending = (async () => {
          await this.#ready;
          const row = await this.database.tx(async (c) => {
            await c.query(`INSERT INTO herald_topics (name, partitions, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`, [name, wanted, this.#clock.now()]);
            const r = (await c.query<{ id: number; partitions: number }>(`SELECT id, partitions FROM herald_topics WHERE name = $1`, [name])).rows[0]!;
            await c.query(
              `INSERT INTO herald_partitions (topic_id, partition, next_offset) SELECT $1, g, 0 FROM generate_series(0, $2 - 1) g ON CONFLICT (topic_id, partition) DO NOTHING`,
              [r.id, r.partitions],
            );
            return r;
          });
          const meta: TopicMeta = { id: row.id, name, partitions: row.partitions, rr: new RoundRobin(), listeners: new Set(), appends: new Uint32Array(row.partitions) };
          this.#topics.set(name, meta);
          this.#topicsById.set(meta.id, meta);
          return meta;
        })();
        this.#pendingTopics.set(name, pending);
        pending.then(
          () => this.#pendingTopics.delete(name),
          () => this.#pendingTopics.delete(name),
        );
      }
      t = await pending;
    }
    if (partitions !== undefined && partitions !== t.partitions) {
      throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `topic "${name}" has ${t.partitions} partitions, not ${partitions}`, {
        details: { topic: name, partitions: t.partitions, requested: partitions },
      });
    }
    return t;
  }

  #scheduleFlush(): void {
    if (this.#flushScheduled || this.#flushing) return;
    this.#flushScheduled = true;
    setImmediate(() => {
      this.#flushScheduled = false;
      void this.#flush();
    });
  }

  #flush(): Promise<void> {
    if (this.#flushing) return this.#flushing;
    if (this.#queue.length === 0) return Promise.resolve();
    const run = async (): Promise<void> => {
      while (this.#queue.length > 0) {
        const batch = this.#take();
        let receipts: PublishReceipt[][] | undefined;
        let failure: unknown;
        try {
          receipts = await this.#write(batch);
        } catch (e) {
          failure = e;
        }
        let n = 0;
        for (const b of batch) n += b.bodies.length;
        this.#admission.release(n);
        if (receipts) {
          this.#stats.publishTransactions++;
          this.#stats.publishCalls += batch.length;
          this.#stats.publishedMessages += n;
          const touched = new Set<TopicMeta>();
          for (let i = 0; i < batch.length; i++) {
            const b = batch[i]!;
            touched.add(b.topic);
            for (const p of b.partitions) b.topic.appends[p]!++;
            b.resolve(receipts[i]!);
          }
          for (const t of touched) for (const l of [...t.listeners]) l();
        } else {
          for (const b of batch) b.reject(failure);
        }
      }
    };
    this.#flushing = run().finally(() => {
      this.#flushing = undefined;
      if (this.#queue.length > 0) this.#scheduleFlush();
    });
    return this.#flushing;
  }

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
   * The group commit: one statement locks the counter rows of every (topic, partition) written,
   * in key order, moves them, inserts the records with consecutive offsets and notifies once.
   */
  async #write(batch: readonly PendingPublish[]): Promise<PublishReceipt[][]> {
    await this.#ready;
    const counts = new Map<string, { topic: number; partition: number; n: number; first: number }>();
    const tid: number[] = [];
    const part: number[] = [];
    const key: (string | null)[] = [];
    const body: string[] = [];
    for (const b of batch) {
      for (let i = 0; i < b.bodies.length; i++) {
        const k = `${b.topic.id}:${b.partitions[i]}`;
        const c = counts.get(k);
        if (c) c.n++;
        else counts.set(k, { topic: b.topic.id, partition: b.partitions[i]!, n: 1, first: 0 });
        tid.push(b.topic.id);
        part.push(b.partitions[i]!);
        key.push(b.keys[i]!);
        body.push(b.bodies[i]!);
      }
    }
    const ct: number[] = [];
    const cp: number[] = [];
    const cn: number[] = [];
    for (const c of counts.values()) {
      ct.push(c.topic);
      cp.push(c.partition);
      cn.push(c.n);
    }
    const topics = [...new Set(batch.map((b) => b.topic.id))].join(',');
    const r = await this.database.query<{ topic_id: number; partition: number; first: string }>(
      `WITH c AS (SELECT * FROM unnest($1::int[], $2::int[], $3::int[]) AS c(topic_id, partition, n)),
            l AS (SELECT p.topic_id, p.partition, p.next_offset FROM herald_partitions p JOIN c USING (topic_id, partition)
                  ORDER BY p.topic_id, p.partition FOR UPDATE OF p),
            u AS (UPDATE herald_partitions p SET next_offset = l.next_offset + c.n FROM l JOIN c USING (topic_id, partition)
                  WHERE p.topic_id = l.topic_id AND p.partition = l.partition RETURNING p.topic_id, p.partition, l.next_offset AS first),
            m AS (SELECT * FROM unnest($4::int[], $5::int[], $6::text[], $7::text[]) WITH ORDINALITY AS m(topic_id, partition, key, envelope, ord)),
            i AS (INSERT INTO herald_log (topic_id, partition, "offset", key, appended_at, envelope)
                  SELECT m.topic_id, m.partition, l.next_offset + row_number() OVER (PARTITION BY m.topic_id, m.partition ORDER BY m.ord) - 1, m.key, $8, m.envelope
                  FROM m JOIN l USING (topic_id, partition) RETURNING 1)
       SELECT u.topic_id, u.partition, u.first, (SELECT count(*) FROM i) AS inserted, (SELECT pg_notify($9, $10)) AS notified FROM u`,
      [ct, cp, cn, tid, part, key, body, this.#clock.now(), this.#channel, topics],
    );
    if (r.rows.length !== counts.size) throw new HeraldError('HERALD_ERR_STORAGE', `publish found ${r.rows.length} of ${counts.size} partition counters (was the topic dropped?)`);
    for (const row of r.rows) counts.get(`${row.topic_id}:${row.partition}`)!.first = Number(row.first);
    const out: PublishReceipt[][] = new Array(batch.length);
    for (let b = 0; b < batch.length; b++) {
      const { topic: t, partitions } = batch[b]!;
      const receipts: PublishReceipt[] = new Array(partitions.length);
      for (let i = 0; i < partitions.length; i++) {
        const c = counts.get(`${t.id}:${partitions[i]}`)!;
        receipts[i] = { topic: t.name, partition: partitions[i]!, position: String(c.first++) };
      }
      out[b] = receipts;
    }
    return out;
  }

  /** Starts listening for other processes' publishes (once). */
  #listen(): void {
    if (this.#unlisten || this.#closed) return;
    this.#unlisten = notifierOf(this.database).listen(this.#channel, (payload) => {
      const ids = payload === '' ? [...this.#topicsById.keys()] : payload.split(',').map(Number);
      for (const id of ids) {
        const t = this.#topicsById.get(id);
        if (!t || t.listeners.size === 0) continue;
        for (let p = 0; p < t.partitions; p++) t.appends[p]!++;
        for (const l of [...t.listeners]) l();
      }
    });
  }

  /** Records of `topic` deleted by the hard cap before `group` committed them; without `group`, the sum over every group. */
  async retentionDropped(topic: string, group?: string): Promise<number> {
    this.#open();
    await this.#ready;
    const r = await this.database.query<{ n: string | null }>(
      group === undefined
        ? `SELECT sum(d.dropped) AS n FROM herald_retention_dropped d JOIN herald_topics t ON t.id = d.topic_id WHERE t.name = $1`
        : `SELECT d.dropped AS n FROM herald_retention_dropped d JOIN herald_topics t ON t.id = d.topic_id WHERE t.name = $1 AND d.grp = $2`,
      group === undefined ? [topic] : [topic, group],
    );
    return Number(r.rows[0]?.n ?? 0);
  }

  /** Forgets `group` on `topic`: its offsets and dropped counts are deleted, so retention stops waiting for it. */
  async forgetGroup(topic: string, group: string): Promise<boolean> {
    this.#open();
    await this.#ready;
    return this.database.tx(async (c) => {
      const t = (await c.query<{ id: number }>(`SELECT id FROM herald_topics WHERE name = $1`, [topic])).rows[0];
      if (!t) return false;
      const n = (await c.query(`DELETE FROM herald_offsets WHERE topic_id = $1 AND grp = $2`, [t.id, group])).rowCount ?? 0;
      await c.query(`DELETE FROM herald_retention_dropped WHERE topic_id = $1 AND grp = $2`, [t.id, group]);
      return n > 0;
    });
  }

  /**
   * Consumer lag per (topic, group, partition) of every group registered in the schema (every
   * process's, members or not): `LagSource`. One read-only statement (see lag.ts); safe to call
   * concurrently. Rejects with HERALD_ERR_STORAGE when the server fails, HERALD_ERR_CLOSED once closed.
   */
  async lag(filter?: LagFilter): Promise<readonly PartitionLag[]> {
    this.#open();
    await this.#ready;
    return readPostgresLag(this.database, filter);
  }

  /**
   * Applies retention to every topic of the schema now (it also runs every `intervalMs`): age
   * up to the slowest registered group, then the hard cap, counting for each group the records
   * it had not committed. One transaction per partition, holding its counter row.
   */
  async runRetention(): Promise<{ deleted: number }> {
    this.#open();
    await this.#ready;
    if (this.#maxAgeMs === undefined && this.#cap === undefined) return { deleted: 0 };
    const parts = (await this.database.query<{ topic_id: number; partition: number }>(`SELECT topic_id, partition FROM herald_partitions ORDER BY topic_id, partition`)).rows;
    let deleted = 0;
    const cutoff = this.#maxAgeMs === undefined ? undefined : this.#clock.now() - this.#maxAgeMs;
    for (const { topic_id: t, partition: p } of parts) {
      deleted += await this.database.tx(async (c) => {
        const head = (
          await c.query<{ next: string; first: string | null; young: string | null }>(
            `SELECT p.next_offset AS next, (SELECT min("offset") FROM herald_log WHERE topic_id = $1 AND partition = $2) AS first,
                    (SELECT min("offset") FROM herald_log WHERE topic_id = $1 AND partition = $2 AND appended_at >= $3) AS young
             FROM herald_partitions p WHERE p.topic_id = $1 AND p.partition = $2 FOR UPDATE`,
            [t, p, cutoff ?? 0],
          )
        ).rows[0];
        if (!head || head.first === null) return 0;
        const next = Number(head.next);
        const first = Number(head.first);
        if (!retentionDue(first, next, cutoff !== undefined, this.#cap)) return 0;
        const groups = (await c.query<{ grp: string; committed: string }>(`SELECT grp, committed FROM herald_offsets WHERE topic_id = $1 AND partition = $2`, [t, p])).rows.map((g) => ({
          grp: g.grp,
          committed: Number(g.committed),
        }));
        const young = cutoff === undefined ? undefined : head.young === null ? next : Number(head.young);
        const { upTo, losses } = planRetention({ first, next, young, cap: this.#cap, groups });
        for (const l of losses) {
          const lost = Number(
            (await c.query<{ n: string }>(`SELECT count(*) AS n FROM herald_log WHERE topic_id = $1 AND partition = $2 AND "offset" > $3 AND "offset" <= $4`, [t, p, l.after, l.upTo])).rows[0]!.n,
          );
          if (lost > 0) {
            await c.query(
              `INSERT INTO herald_retention_dropped (topic_id, grp, dropped) VALUES ($1, $2, $3) ON CONFLICT (topic_id, grp) DO UPDATE SET dropped = herald_retention_dropped.dropped + excluded.dropped`,
              [t, l.grp, lost],
            );
          }
        }
        if (upTo < first) return 0;
        return (await c.query(`DELETE FROM herald_log WHERE topic_id = $1 AND partition = $2 AND "offset" <= $3`, [t, p, upTo])).rowCount ?? 0;
      });
    }
    return { deleted };
  }

  stats(): PostgresTransportStats {
    return { ...this.#stats, queuedMessages: this.#admission.used };
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.#closed = true;
      this.#retentionTimer?.cancel();
      this.#closePromise = this.#close(options);
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  async #close(options: { timeoutMs?: number }): Promise<void> {
    while (this.#admission.used > 0 || this.#admission.waiting || this.#flushing) {
      await (this.#flushing ?? this.#flush());
      await new Promise<void>((r) => setImmediate(r));
    }
    await Promise.all([...this.#subs].map((s) => s.close(options)));
    this.#unlisten?.();
    await this.leases.close();
    if (this.#owned) await this.database.close();
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'postgres transport is closed');
  }
}

/**
 * Per-partition read-ahead for one subscription: each query fetches at least `batch` records
 * and the rest is served from memory (a partition's records after an offset never change:
 * offsets are assigned under the counter row lock and become visible in order). A partition
 * found empty stays "known empty" until an append is known (local or NOTIFY) or `pollMs` passed.
 */
class ReadAhead {
  readonly #windows: Array<{ rows: readonly LogRecord[]; at: number } | undefined>;
  readonly #empty: Array<{ after: number; appends: number; at: number } | undefined>;
  readonly #topic: TopicMeta;
  readonly #batch: number;
  readonly #pollMs: number;
  readonly #query: (p: number, after: number, limit: number) => Promise<readonly LogRecord[]>;

  constructor(topic: TopicMeta, batch: number, pollMs: number, query: (p: number, after: number, limit: number) => Promise<readonly LogRecord[]>) {
    this.#topic = topic;
    this.#windows = new Array(topic.partitions);
    this.#empty = new Array(topic.partitions);
    this.#batch = batch;
    this.#pollMs = pollMs;
    this.#query = query;
  }

  async fetch(p: number, after: number, limit: number): Promise<readonly LogRecord[]> {
    let w = this.#windows[p];
    if (w) {
      while (w.at < w.rows.length && w.rows[w.at]!.offset <= after) w.at++;
      if (w.at === 0 || w.at >= w.rows.length || w.rows[w.at - 1]!.offset !== after) w = this.#windows[p] = undefined;
    }
    if (!w) {
      const appends = this.#topic.appends[p]!;
      const now = performance.now();
      const e = this.#empty[p];
      if (e && e.after === after && e.appends === appends && now - e.at < this.#pollMs) return [];
      const rows = await this.#query(p, after, Math.max(limit, this.#batch));
      this.#empty[p] = rows.length === 0 ? { after, appends, at: now } : undefined;
      if (rows.length <= limit) return rows;
      w = this.#windows[p] = { rows, at: 0 };
    }
    const out = w.rows.slice(w.at, w.at + limit);
    w.at += out.length;
    if (w.at >= w.rows.length) this.#windows[p] = undefined;
    return out;
  }
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
