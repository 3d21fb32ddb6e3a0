/**
 * The in-memory `SagaStore`, on `MemoryUnitOfWork` (core). Instances are staged through the
 * transaction's `native` (table `herald.sagas`), so `load` sees the transaction's own writes
 * and a rollback discards them; the committed copy, the listing order and the timelines are
 * applied in `afterCommit` (which `MemoryUnitOfWork` runs inside its serialized commit, so a
 * reader never sees half a transaction). The revision check in `save` is atomic because
 * `MemoryUnitOfWork` runs one transaction at a time. Values are deep-copied in and out (the
 * state must be JSON, as on every other backend). Nothing survives the process.
 */
import type { MemoryTx, Transaction } from '@herald/core';
import type { SagaInstance, SagaTimelineEntry } from './saga.ts';
import {
  checkListOptions,
  checkSave,
  decodeCursor,
  encodeCursor,
  SagaConcurrencyError,
  type SagaListOptions,
  type SagaPage,
  type SagaStatusCount,
  type SagaStore,
  type StoredSagaTimelineEntry,
} from './saga-store.ts';

const TABLE = 'herald.sagas';

interface Row {
  readonly seq: number;
  instance: SagaInstance;
  readonly timeline: StoredSagaTimelineEntry[];
}

function idOf(saga: string, key: string): string {
  return `${saga}\u0000${key}`;
}

function copy<T>(v: T): T {
  return JSON.parse(JSON.stringify(v)) as T;
}

export class MemorySagaStore implements SagaStore<MemoryTx> {
  readonly name = 'memory';
  readonly #rows = new Map<string, Row>();
  #seq = 0;
  #timelineSeq = 0;

  async load(tx: Transaction<MemoryTx>, saga: string, key: string): Promise<SagaInstance | undefined> {
    const staged = tx.native.get(TABLE, idOf(saga, key)) as SagaInstance | undefined;
    return staged === undefined ? undefined : copy(staged);
  }

  async save(tx: Transaction<MemoryTx>, instance: SagaInstance, expectedRevision: number): Promise<void> {
    checkSave(instance, expectedRevision);
    const id = idOf(instance.saga, instance.key);
    const stored = tx.native.get(TABLE, id) as SagaInstance | undefined;
    const actual = stored?.revision ?? 0;
    if (actual !== expectedRevision) throw new SagaConcurrencyError(instance.saga, instance.key, expectedRevision, actual);
    const value = copy(instance);
    tx.native.put(TABLE, id, value);
    tx.afterCommit(() => {
      const row = this.#rows.get(id);
      if (row) row.instance = value;
      else this.#rows.set(id, { seq: ++this.#seq, instance: value, timeline: [] });
    });
  }

  async appendTimeline(tx: Transaction<MemoryTx>, saga: string, key: string, instanceId: string, entries: readonly SagaTimelineEntry[]): Promise<void> {
    if (entries.length === 0) return;
    const values = copy(entries);
    const id = idOf(saga, key);
    tx.afterCommit(() => {
      const row = this.#rows.get(id);
      if (!row) return; // an instance that was never saved has no timeline
      for (const e of values) row.timeline.push({ ...e, seq: ++this.#timelineSeq, instanceId });
    });
  }

  async get(saga: string, key: string): Promise<SagaInstance | undefined> {
    const row = this.#rows.get(idOf(saga, key));
    return row ? copy(row.instance) : undefined;
  }

  async list(options: SagaListOptions = {}): Promise<SagaPage<SagaInstance>> {
    const limit = checkListOptions(options);
    const after = decodeCursor(options.cursor);
    const items: SagaInstance[] = [];
    let last = 0;
    let more = false;
    // Map iteration is insertion order, which is seq order.
    for (const row of this.#rows.values()) {
      if (row.seq <= after) continue;
      if (options.saga !== undefined && row.instance.saga !== options.saga) continue;
      if (options.status !== undefined && row.instance.status !== options.status) continue;
      if (items.length === limit) {
        more = true;
        break;
      }
      items.push(copy(row.instance));
      last = row.seq;
    }
    return { items, next: more ? encodeCursor(last) : undefined };
  }

  async timeline(saga: string, key: string, options: { readonly cursor?: string; readonly limit?: number } = {}): Promise<SagaPage<StoredSagaTimelineEntry>> {
    const limit = checkListOptions({ ...(options.limit !== undefined ? { limit: options.limit } : {}) });
    const after = decodeCursor(options.cursor);
    const all = (this.#rows.get(idOf(saga, key))?.timeline ?? []).filter((e) => e.seq > after);
    const items = all.slice(0, limit).map(copy);
    return { items, next: all.length > limit ? encodeCursor(items[items.length - 1]!.seq) : undefined };
  }

  async countByStatus(): Promise<readonly SagaStatusCount[]> {
    const counts = new Map<string, SagaStatusCount>();
    for (const { instance } of this.#rows.values()) {
      const k = `${instance.saga}\u0000${instance.status}`;
      const c = counts.get(k);
      counts.set(k, { saga: instance.saga, status: instance.status, count: (c?.count ?? 0) + 1 });
    }
    return [...counts.values()].sort((a, b) => (a.saga < b.saga ? -1 : a.saga > b.saga ? 1 : a.status < b.status ? -1 : a.status > b.status ? 1 : 0));
  }
}
