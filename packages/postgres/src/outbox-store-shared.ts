/**
 * What the PostgreSQL unit of work, outbox store and scheduler store share: the outbox
 * partition count fixed in the schema, checking and encoding messages before a row is written,
 * the fenced-write clause, and the wake-ups (in this process at once; across processes through
 * one NOTIFY per commit on the schema's channel).
 *
 * Every message is checked when `tx.publish` / `tx.schedule` is called (inside the caller's
 * callback, so a refusal rolls the transaction back) by core's `encodeOutgoing`
 * (`maxPayloadBytes` default 1 MiB).
 */
import { HeraldError, type LeaseFence, type OutgoingMessage } from '@herald/core';
import { checkOutboxTopic, encodeOutgoing, nonNegativeInt, partitionCount, storedOutgoing } from '@herald/core/internal';
import type { PgDatabase } from './database.ts';
import { ensureMigrated } from './migrations.ts';
import { channelName, notifierOf } from './notifier.ts';
import { LOG_COMPONENT, OUTBOX_COMPONENT } from './schema.ts';

export const DEFAULT_OUTBOX_PARTITIONS = 8;
export const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Outbox ids are `txid * ROWS_PER_TX + n`: at most this many outbox rows per transaction. */
export const ROWS_PER_TX = 1_000_000;

export type WriteKind = 'outbox' | 'scheduled';

/** Migrates what the unit of work and the relay-side stores use (the lease table lives in `herald_log`). */
export function ensureOutboxSchema(db: PgDatabase): Promise<void> {
  return ensureMigrated(db, [LOG_COMPONENT, OUTBOX_COMPONENT]);
}

/**
 * The outbox partition count of the schema: the first caller fixes it (`requested`, or 8). A
 * different explicit count later is `HERALD_ERR_INVALID_ARGUMENT` (stored rows carry partitions
 * of the stored count).
 */
export async function outboxPartitions(db: PgDatabase, requested?: number): Promise<number> {
  if (requested !== undefined) partitionCount(requested);
  await ensureOutboxSchema(db);
  const r = await db.query<{ partitions: number }>(
    `WITH ins AS (INSERT INTO herald_outbox_settings (id, partitions) VALUES (1, $1) ON CONFLICT (id) DO NOTHING RETURNING partitions)
     SELECT partitions FROM ins UNION ALL SELECT partitions FROM herald_outbox_settings WHERE id = 1`,
    [requested ?? DEFAULT_OUTBOX_PARTITIONS],
  );
  const stored = r.rows[0]!.partitions;
  await refuseIdsFromAnotherCluster(db);
  if (requested !== undefined && requested !== stored) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `outboxPartitions is ${requested} but schema "${db.schema}" has an outbox of ${stored} partitions (fixed when it was created)`, {
      details: { schema: db.schema, requested, stored },
    });
  }
  return stored;
}

/**
 * Outbox ids embed transaction ids (see outbox-store.ts). After a dump restored into another
 * cluster, stored ids can be above any id the new cluster will give: new rows would sort below
 * the sent watermark and never be relayed. Refuse to start instead (HERALD_ERR_STORAGE, not
 * retryable) — drain the outbox before a dump.
 */
async function refuseIdsFromAnotherCluster(db: PgDatabase): Promise<void> {
  const r = await db.query<{ top: string | null; next: string }>(
    `SELECT greatest((SELECT max(id) FROM herald_outbox), (SELECT max(upto) FROM herald_outbox_marks))::text AS top,
            (pg_snapshot_xmax(pg_current_snapshot())::text::numeric * ${ROWS_PER_TX})::text AS next`,
  );
  const { top, next } = r.rows[0]!;
  if (top !== null && BigInt(top) >= BigInt(next)) {
    throw new HeraldError(
      'HERALD_ERR_STORAGE',
      `schema "${db.schema}": the outbox holds ids (up to ${top}) from transactions this cluster has not reached (next id ${next}) — restored from another cluster's dump? New rows would sort below them. Drain the outbox before a dump; see docs/explanation/postgres-global-order.md#the-outbox`,
      { retryable: false, details: { schema: db.schema, storedMaxId: top, nextId: next } },
    );
  }
}

// ── wake-ups ───────────────────────────────────────────────────────────────

const listeners = new Map<string, Set<() => void>>();

/** The NOTIFY channel of `kind` writes in `schema`. */
export function writeChannel(kind: WriteKind, schema: string): string {
  return channelName(kind === 'outbox' ? 'ob' : 'sc', schema);
}

/**
 * Calls `listener` after every commit that wrote rows of `kind` in `db`'s schema: at once for
 * commits of this process, on the NOTIFY for other processes' (and once after the LISTEN
 * connection reconnects). Returns the remover.
 */
export function onSchemaWrite(db: PgDatabase, kind: WriteKind, listener: () => void): () => void {
  const k = `${kind}\u0000${db.options.host ?? ''}:${db.options.port ?? ''}/${db.options.database ?? ''}/${db.schema}`;
  let set = listeners.get(k);
  if (!set) listeners.set(k, (set = new Set()));
  set.add(listener);
  const unlisten = notifierOf(db).listen(writeChannel(kind, db.schema), listener);
  return () => {
    unlisten();
    set.delete(listener);
    if (set.size === 0 && listeners.get(k) === set) listeners.delete(k);
  };
}

/** In-process wake-up after a commit; a listener that throws does not stop the others. */
export function notifyLocalWrite(db: PgDatabase, kind: WriteKind, onError: (e: unknown) => void): void {
  const set = listeners.get(`${kind}\u0000${db.options.host ?? ''}:${db.options.port ?? ''}/${db.options.database ?? ''}/${db.schema}`);
  if (!set) return;
  for (const l of [...set]) {
    try {
      l();
    } catch (e) {
      onError(e);
    }
  }
}

// ── encoding ───────────────────────────────────────────────────────────────

/** Checks one outgoing message and encodes its envelope (core's shared check). */
export const encodeMessage = encodeOutgoing;
export const checkTopic: typeof checkOutboxTopic = checkOutboxTopic;

export function checkMaxPayload(v: number | undefined): number {
  return nonNegativeInt('maxPayloadBytes', v ?? DEFAULT_MAX_PAYLOAD);
}

export interface ScheduledRow {
  readonly id: string;
  readonly topic: string;
  readonly key: string | null;
  readonly body: string;
  readonly deliverAt: number;
}

/** Checks a scheduled write; its id defaults to the envelope id. */
export function encodeScheduled(write: { topic: string; message: OutgoingMessage; deliverAt: number; id?: string }, maxPayload: number): ScheduledRow {
  if (typeof write !== 'object' || write === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'a scheduled write must be an object { topic, message, deliverAt }');
  checkTopic(write.topic);
  if (typeof write.deliverAt !== 'number' || !Number.isFinite(write.deliverAt)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `deliverAt must be a finite number of epoch ms (got ${String(write.deliverAt)})`);
  }
  const r = encodeMessage(write.topic, write.message, 0, maxPayload);
  const id = write.id ?? r.envelope.id;
  if (typeof id !== 'string' || id === '') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `a scheduled message id must be a non-empty string (got ${String(id)})`);
  return { id, topic: write.topic, key: r.key, body: r.body, deliverAt: Math.floor(write.deliverAt) };
}

/** Inserts scheduled rows (an id already stored keeps its first entry), one statement. */
export const INSERT_SCHEDULED_SQL = `INSERT INTO herald_scheduled (id, topic, key, envelope, deliver_at, created_at)
  SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[]) ON CONFLICT (id) DO NOTHING`;

export function scheduledParams(rows: readonly ScheduledRow[], now: number): unknown[] {
  return [rows.map((r) => r.id), rows.map((r) => r.topic), rows.map((r) => r.key), rows.map((r) => r.body), rows.map((r) => r.deliverAt), rows.map(() => now)];
}

export const storedMessage = storedOutgoing;

// ── fencing ────────────────────────────────────────────────────────────────

/**
 * A CTE `fence` that yields one row while `fence` (params $1..$4: scope, resource, owner,
 * epoch) is the current lease in `herald_leases`, locking the lease row (FOR SHARE) so a
 * concurrent take-over waits for the fenced write to commit and the write can never land after
 * the lease moved on.
 */
export const FENCE_CTE = `fence AS (SELECT 1 FROM herald_leases WHERE scope = $1 AND resource = $2 AND owner = $3 AND epoch = $4 FOR SHARE)`;

export function fenceParams(fence: LeaseFence): unknown[] {
  if (typeof fence !== 'object' || fence === null || typeof fence.scope !== 'string' || typeof fence.resource !== 'string' || typeof fence.owner !== 'string' || !Number.isSafeInteger(fence.epoch)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'a lease fence is { scope, resource, owner, epoch }');
  }
  return [fence.scope, fence.resource, fence.owner, fence.epoch];
}
