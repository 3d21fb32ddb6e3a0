/**
 * Dead letters: a store kind used with any transport. Per consumer group it keeps the original
 * envelope and raw bytes, the error, attempts, handler and failure times, and the parked
 * later messages of a parked key. A broker's own DLX or dead-letter topic is at most a mirror.
 *
 * Redrive marks entries; the group's consumer (the member owning the entry's partition) picks
 * them up and runs them through the same handler: redrive reaches only the failed group. A
 * parked key's entries are drained in order, and the key is unparked atomically with the
 * removal of its last entry.
 */
import type { CloudEvent } from './envelope.ts';
import { HeraldError } from './errors.ts';
import type { LeaseFence } from './lease.ts';

export type DeadLetterStatus = 'dead' | 'parked' | 'redrive';

export interface DeadLetterError {
  readonly code?: string;
  readonly message: string;
  readonly stack?: string;
}

export interface NewDeadLetter {
  readonly group: string;
  readonly topic: string;
  readonly partition: number;
  readonly key: string | null;
  /** The handler (or 'decode' for undecodable bytes) that failed. */
  readonly handler: string;
  readonly envelope: CloudEvent | null;
  readonly raw: string;
  readonly position: string;
  readonly error: DeadLetterError;
  readonly attempts: number;
  readonly firstFailedAt: number;
  readonly lastFailedAt: number;
}

export interface DeadLetterEntry extends NewDeadLetter {
  /** Store-assigned, increasing in insertion order. */
  readonly id: string;
  readonly eventId: string | null;
  readonly type: string | null;
  readonly status: DeadLetterStatus;
  /** For a message moved here because its key was parked: the dead letter that parked the key. */
  readonly parkedBehind: string | null;
}

export interface DeadLetterFilter {
  readonly group?: string;
  readonly topic?: string;
  readonly type?: string;
  readonly key?: string;
  readonly status?: DeadLetterStatus;
  /** Case-insensitive substring of the error message. */
  readonly errorContains?: string;
  /** lastFailedAt >= since (epoch ms). */
  readonly since?: number;
  /** lastFailedAt < until (epoch ms). */
  readonly until?: number;
}

export interface DeadLetterPage {
  readonly entries: readonly DeadLetterEntry[];
  /** Pass back as `cursor` for the next page; absent on the last page. */
  readonly nextCursor?: string;
}

export type DeadLetterSelector = { readonly ids: readonly string[] } | { readonly filter: DeadLetterFilter };

export interface WriteOptions {
  /** The lease the write is made under; the write is refused (`HERALD_ERR_LEASE_LOST`) if it is no longer current. */
  readonly fence?: LeaseFence;
}

export const DEFAULT_DEAD_LETTER_PAGE = 100;
export const MAX_DEAD_LETTER_PAGE = 1000;

export interface DeadLetterStore {
  /** Stores a failed message ('dead'). With `park`, its key is parked too: later messages of the key are moved here in order. */
  add(entry: NewDeadLetter, options?: WriteOptions & { park?: boolean }): Promise<DeadLetterEntry>;
  /** Moves a later message of a parked key here (status 'parked', or 'redrive' while the key drains). */
  parkMessage(entry: NewDeadLetter, options?: WriteOptions): Promise<DeadLetterEntry>;
  /** Keys parked in `group`/`topic` (optionally one partition). */
  parkedKeys(group: string, topic: string, partition?: number): Promise<readonly string[]>;
  get(id: string): Promise<DeadLetterEntry | undefined>;
  /** Oldest first, cursor-paginated (`limit` default 100, at most 1000). */
  list(filter?: DeadLetterFilter, page?: { cursor?: string; limit?: number }): Promise<DeadLetterPage>;
  count(filter?: DeadLetterFilter): Promise<number>;
  /**
   * Marks entries for redrive to their own group. Selecting any entry of a parked key marks
   * all of that key's entries, which drain in order. Returns the number of entries marked.
   */
  redrive(selector: DeadLetterSelector): Promise<number>;
  /** Entries marked for redrive in `group`/`topic` on `partitions`, in insertion order. */
  pendingRedrives(group: string, topic: string, partitions: readonly number[], limit: number): Promise<readonly DeadLetterEntry[]>;
  /** A redriven entry was handled: remove it; when it was its parked key's last entry, unpark the key in the same step. */
  completeRedrive(id: string, options?: WriteOptions): Promise<{ unparked: boolean }>;
  /** A redriven entry failed again: back to 'dead' with the new error; its key's other entries stop draining. */
  failRedrive(id: string, error: DeadLetterError, attempts: number, at: number, options?: WriteOptions): Promise<void>;
  /** Deletes entries; a parked key with no entries left is unparked. Returns the number deleted. */
  discard(selector: DeadLetterSelector): Promise<number>;
  close(): Promise<void>;
}

/** Applies a filter in memory; stores that cannot push a filter down share it. */
export function matchesDeadLetter(e: DeadLetterEntry, f: DeadLetterFilter): boolean {
  if (f.group !== undefined && e.group !== f.group) return false;
  if (f.topic !== undefined && e.topic !== f.topic) return false;
  if (f.type !== undefined && e.type !== f.type) return false;
  if (f.key !== undefined && e.key !== f.key) return false;
  if (f.status !== undefined && e.status !== f.status) return false;
  if (f.errorContains !== undefined && !e.error.message.toLowerCase().includes(f.errorContains.toLowerCase())) return false;
  if (f.since !== undefined && e.lastFailedAt < f.since) return false;
  if (f.until !== undefined && e.lastFailedAt >= f.until) return false;
  return true;
}

export function pageLimit(limit: number | undefined): number {
  const l = limit ?? DEFAULT_DEAD_LETTER_PAGE;
  if (!Number.isInteger(l) || l < 1 || l > MAX_DEAD_LETTER_PAGE) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `page limit must be an integer from 1 to ${MAX_DEAD_LETTER_PAGE} (got ${limit})`);
  }
  return l;
}

/** The LeaseStore check a store runs before a fenced write. */
export type FenceCheck = (fence: LeaseFence) => boolean | Promise<boolean>;

/** In-memory DeadLetterStore (tests, the memory transport). */
export class MemoryDeadLetterStore implements DeadLetterStore {
  readonly #entries = new Map<string, DeadLetterEntry>();
  /** `${group}\0${topic}\0${key}` → draining */
  readonly #parked = new Map<string, { draining: boolean; partition: number; parkedBy: string }>();
  #seq = 0;
  readonly #fenceCheck: FenceCheck | undefined;
  #closed = false;

  /** `fenceCheck`: usually a `LeaseStore`'s `validate`, so fenced writes are refused for stale owners. */
  constructor(options: { fenceCheck?: FenceCheck } = {}) {
    this.#fenceCheck = options.fenceCheck;
  }

  async add(entry: NewDeadLetter, options: WriteOptions & { park?: boolean } = {}): Promise<DeadLetterEntry> {
    await this.#checkFence(options.fence);
    const stored = this.#store(entry, 'dead', null);
    if (options.park && entry.key !== null) {
      this.#parked.set(parkKey(entry.group, entry.topic, entry.key), { draining: false, partition: entry.partition, parkedBy: stored.id });
    }
    return stored;
  }

  async parkMessage(entry: NewDeadLetter, options: WriteOptions = {}): Promise<DeadLetterEntry> {
    await this.#checkFence(options.fence);
    if (entry.key === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'only a message with a key can be parked');
    const park = this.#parked.get(parkKey(entry.group, entry.topic, entry.key));
    if (!park) throw new HeraldError('HERALD_ERR_NOT_FOUND', `key "${entry.key}" is not parked in group "${entry.group}" on topic "${entry.topic}"`);
    // Behind the dead letter that parked the key, not an older dead letter of the same key.
    return this.#store(entry, park.draining ? 'redrive' : 'parked', park.parkedBy);
  }

  async parkedKeys(group: string, topic: string, partition?: number): Promise<readonly string[]> {
    this.#open();
    const out: string[] = [];
    for (const [k, v] of this.#parked) {
      const [g, t, key] = k.split('\u0000') as [string, string, string];
      if (g === group && t === topic && (partition === undefined || v.partition === partition)) out.push(key);
    }
    return out;
  }

  async get(id: string): Promise<DeadLetterEntry | undefined> {
    this.#open();
    return this.#entries.get(id);
  }

  async list(filter: DeadLetterFilter = {}, page: { cursor?: string; limit?: number } = {}): Promise<DeadLetterPage> {
    this.#open();
    const limit = pageLimit(page.limit);
    const after = page.cursor === undefined ? -1 : Number(page.cursor);
    if (!Number.isInteger(after)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `bad dead-letter cursor "${page.cursor}"`);
    const entries: DeadLetterEntry[] = [];
    let more = false;
    for (const e of this.#entries.values()) {
      if (Number(e.id) <= after || !matchesDeadLetter(e, filter)) continue;
      if (entries.length === limit) {
        more = true;
        break;
      }
      entries.push(e);
    }
    return more ? { entries, nextCursor: entries[entries.length - 1]!.id } : { entries };
  }

  async count(filter: DeadLetterFilter = {}): Promise<number> {
    this.#open();
    let n = 0;
    for (const e of this.#entries.values()) if (matchesDeadLetter(e, filter)) n++;
    return n;
  }

  async redrive(selector: DeadLetterSelector): Promise<number> {
    this.#open();
    const chosen = this.#select(selector);
    let n = 0;
    const keysToDrain = new Set<string>();
    for (const e of chosen) {
      if (e.key !== null && this.#parked.has(parkKey(e.group, e.topic, e.key))) keysToDrain.add(parkKey(e.group, e.topic, e.key));
      else if (e.status !== 'redrive') {
        this.#entries.set(e.id, { ...e, status: 'redrive' });
        n++;
      }
    }
    for (const pk of keysToDrain) {
      this.#parked.get(pk)!.draining = true;
      for (const e of this.#entries.values()) {
        if (parkKey(e.group, e.topic, e.key ?? '') === pk && e.key !== null && e.status !== 'redrive') {
          this.#entries.set(e.id, { ...e, status: 'redrive' });
          n++;
        }
      }
    }
    return n;
  }

  async pendingRedrives(group: string, topic: string, partitions: readonly number[], limit: number): Promise<readonly DeadLetterEntry[]> {
    this.#open();
    const ps = new Set(partitions);
    const out: DeadLetterEntry[] = [];
    for (const e of this.#entries.values()) {
      if (out.length >= limit) break;
      if (e.status === 'redrive' && e.group === group && e.topic === topic && ps.has(e.partition)) out.push(e);
    }
    return out;
  }

  async completeRedrive(id: string, options: WriteOptions = {}): Promise<{ unparked: boolean }> {
    await this.#checkFence(options.fence);
    const e = this.#entries.get(id);
    if (!e) return { unparked: false };
    this.#entries.delete(id);
    return { unparked: this.#unparkIfEmpty(e) };
  }

  async failRedrive(id: string, error: DeadLetterError, attempts: number, at: number, options: WriteOptions = {}): Promise<void> {
    await this.#checkFence(options.fence);
    const e = this.#entries.get(id);
    if (!e) throw new HeraldError('HERALD_ERR_NOT_FOUND', `no dead letter with id "${id}"`);
    this.#entries.set(id, { ...e, status: 'dead', error, attempts, lastFailedAt: at });
    if (e.key === null) return;
    const pk = parkKey(e.group, e.topic, e.key);
    const park = this.#parked.get(pk);
    if (!park) return;
    park.draining = false;
    for (const other of this.#entries.values()) {
      if (other.id !== id && other.group === e.group && other.topic === e.topic && other.key === e.key && other.status === 'redrive') {
        this.#entries.set(other.id, { ...other, status: 'parked' });
      }
    }
  }

  async discard(selector: DeadLetterSelector): Promise<number> {
    this.#open();
    const chosen = this.#select(selector);
    for (const e of chosen) this.#entries.delete(e.id);
    for (const e of chosen) this.#unparkIfEmpty(e);
    return chosen.length;
  }

  async close(): Promise<void> {
    this.#closed = true;
  }

  #store(entry: NewDeadLetter, status: DeadLetterStatus, parkedBehind: string | null): DeadLetterEntry {
    this.#open();
    const id = String(++this.#seq).padStart(12, '0');
    const stored: DeadLetterEntry = Object.freeze({
      ...entry,
      id,
      eventId: entry.envelope?.id ?? null,
      type: entry.envelope?.type ?? null,
      status,
      parkedBehind,
    });
    this.#entries.set(id, stored);
    return stored;
  }

  #select(selector: DeadLetterSelector): DeadLetterEntry[] {
    if ('ids' in selector) return selector.ids.map((id) => this.#entries.get(id)).filter((e): e is DeadLetterEntry => e !== undefined);
    return [...this.#entries.values()].filter((e) => matchesDeadLetter(e, selector.filter));
  }

  #unparkIfEmpty(e: DeadLetterEntry): boolean {
    if (e.key === null) return false;
    const pk = parkKey(e.group, e.topic, e.key);
    if (!this.#parked.has(pk)) return false;
    for (const other of this.#entries.values()) if (other.group === e.group && other.topic === e.topic && other.key === e.key) return false;
    this.#parked.delete(pk);
    return true;
  }

  async #checkFence(fence: LeaseFence | undefined): Promise<void> {
    this.#open();
    if (fence && this.#fenceCheck && !(await this.#fenceCheck(fence))) {
      throw new HeraldError('HERALD_ERR_LEASE_LOST', `write refused: lease ${fence.scope}/${fence.resource} epoch ${fence.epoch} of "${fence.owner}" is no longer current`, {
        details: { ...fence },
      });
    }
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'dead-letter store is closed');
  }
}

function parkKey(group: string, topic: string, key: string): string {
  return `${group}\u0000${topic}\u0000${key}`;
}
