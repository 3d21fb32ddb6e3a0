/**
 * The in-process transport, for tests and single-process tools. Envelopes are frozen and
 * passed by reference (no serialization). Topics are partitioned logs held in memory; groups
 * keep committed offsets; an in-process coordinator divides partitions among a group's
 * subscriptions and rebalances when one joins or leaves. Nothing survives the process.
 */
import { type Clock, systemClock } from './clock.ts';
import { encodeEnvelope, encodedSize, ensureEnvelope } from './envelope.ts';
import { HeraldError } from './errors.ts';
import { LogSubscription, type LogRecord, type LogSource } from './log-subscription.ts';
import { partitionForKey, RoundRobin } from './partitioner.ts';
import { partitionCount } from './options.ts';
import type { PartitionLag } from './instrumentation.ts';
import {
  DEFAULT_PARTITIONS,
  type EnsureTopicOptions,
  type OutgoingMessage,
  type PublishReceipt,
  type SubscribeOptions,
  type Subscription,
  type TopicInfo,
  type Transport,
  type TransportCapabilities,
  TOPIC_NAME_RE,
} from './transport.ts';

export interface MemoryTransportOptions {
  /** Partitions for topics created implicitly (default 8). */
  readonly defaultPartitions?: number;
  /** Largest envelope in bytes of its JSON encoding (default 1 MiB). 0 disables the check, and with it all serialization. */
  readonly maxPayloadBytes?: number;
  /** Hard cap of records kept per partition (default 1 000 000); beyond it the oldest are dropped and counted. */
  readonly maxRecordsPerPartition?: number;
  readonly clock?: Clock;
}

interface Partition {
  records: LogRecord[];
  /** Offset of records[0]. */
  base: number;
  next: number;
}

interface Topic {
  readonly name: string;
  readonly partitions: Partition[];
  readonly listeners: Set<() => void>;
  readonly rr: RoundRobin;
  retentionDropped: number;
}

interface Group {
  readonly committed: number[];
  readonly members: LogSubscription[];
  chain: Promise<void>;
}

export function createMemoryTransport(options: MemoryTransportOptions = {}): MemoryTransport {
  return new MemoryTransport(options);
}

export class MemoryTransport implements Transport {
  readonly name = 'memory';
  readonly capabilities: TransportCapabilities;
  readonly #topics = new Map<string, Topic>();
  readonly #groups = new Map<string, Group>();
  readonly #subs = new Set<LogSubscription>();
  readonly #defaultPartitions: number;
  readonly #maxPayload: number;
  readonly #maxRecords: number;
  readonly #clock: Clock;
  #closed = false;
  #closePromise: Promise<void> | undefined;

  constructor(options: MemoryTransportOptions = {}) {
    this.#defaultPartitions = options.defaultPartitions ?? DEFAULT_PARTITIONS;
    this.#maxPayload = options.maxPayloadBytes ?? 1024 * 1024;
    this.#maxRecords = options.maxRecordsPerPartition ?? 1_000_000;
    this.#clock = options.clock ?? systemClock;
    this.capabilities = Object.freeze({
      ackModel: 'offset',
      assignment: 'local',
      consumerGroups: true,
      persistent: false,
      replay: true,
      nativeDelay: false,
      maxPayloadBytes: this.#maxPayload === 0 ? Number.POSITIVE_INFINITY : this.#maxPayload,
      multiProcess: false,
      ackDeadlineMs: 0,
      durability: 'none: held in process memory only',
    });
  }

  async ensureTopic(topic: string, options: EnsureTopicOptions = {}): Promise<TopicInfo> {
    const t = this.#topic(topic, options.partitions);
    return { topic, partitions: t.partitions.length };
  }

  /** Consumer lag per (topic, group, partition) (`LagSource`); the age is the oldest unhandled envelope's `time` (the memory log keeps no append time). */
  async lag(filter: { readonly group?: string; readonly topic?: string } = {}): Promise<readonly PartitionLag[]> {
    return memoryLag(this.#topics, this.#groups, filter);
  }

  /** Records dropped by the hard cap on `topic`. */
  retentionDropped(topic: string): number {
    return this.#topics.get(topic)?.retentionDropped ?? 0;
  }

  async publish(topic: string, messages: readonly OutgoingMessage[]): Promise<readonly PublishReceipt[]> {
    return this.publishSync(topic, messages);
  }

  /** Synchronous publish (what `publish` does, without the promise). */
  publishSync(topic: string, messages: readonly OutgoingMessage[]): PublishReceipt[] {
    this.#open();
    const t = this.#topic(topic);
    const n = t.partitions.length;
    // Refuse bad input before anything is stored: a malformed envelope, an oversize one.
    for (const m of messages) {
      ensureEnvelope(m.envelope);
      if (this.#maxPayload > 0) {
        const size = encodedSize(encodeEnvelope(m.envelope));
        if (size > this.#maxPayload) throw tooLarge(topic, m.envelope.id, size, this.#maxPayload);
      }
    }
    const receipts: PublishReceipt[] = new Array(messages.length);
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!;
      const key = m.key ?? m.envelope.partitionkey;
      const p = key === undefined ? t.rr.next(n) : partitionForKey(key, n);
      const part = t.partitions[p]!;
      const offset = part.next++;
      part.records.push({ offset, key, envelope: m.envelope });
      if (part.records.length > this.#maxRecords) {
        const drop = part.records.length - this.#maxRecords;
        part.records.splice(0, drop);
        part.base += drop;
        t.retentionDropped += drop;
      }
      receipts[i] = { topic, partition: p, position: String(offset) };
    }
    for (const l of t.listeners) l();
    return receipts;
  }

  subscribe(topic: string, options: SubscribeOptions): Subscription {
    this.#open();
    if (!options.group) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'subscribe needs a group');
    const t = this.#topic(topic);
    const gkey = `${topic}\u0000${options.group}`;
    let g = this.#groups.get(gkey);
    if (!g) {
      g = { committed: t.partitions.map(() => -1), members: [], chain: Promise.resolve() };
      this.#groups.set(gkey, g);
    }
    const group = g;
    const source: LogSource = {
      partitions: t.partitions.length,
      committed: (p) => group.committed[p]!,
      head: (p) => t.partitions[p]!.next - 1,
      fetch: (p, after, limit) => {
        const part = t.partitions[p]!;
        const start = Math.max(0, after + 1 - part.base);
        return part.records.slice(start, start + limit);
      },
      commit: (p, offset) => {
        if (offset > group.committed[p]!) group.committed[p] = offset;
      },
      onAppend: (l) => {
        t.listeners.add(l);
        return () => t.listeners.delete(l);
      },
    };
    const sub = new LogSubscription({ ...options, topic, source, clock: this.#clock, ownership: { kind: 'local' }, commitIntervalMs: 0, pollMs: 1000 });
    this.#subs.add(sub);
    group.members.push(sub);
    this.#rebalance(group, t.partitions.length);
    void sub.closed.finally(() => {
      this.#subs.delete(sub);
    });
    // Leaving: wrap close so the group rebalances after this member drained.
    const close = sub.close.bind(sub);
    sub.close = (o?: { timeoutMs?: number }) => {
      const i = group.members.indexOf(sub);
      if (i >= 0) group.members.splice(i, 1);
      const p = close(o);
      void p.then(() => this.#rebalance(group, t.partitions.length));
      return p;
    };
    return sub;
  }

  close(options: { timeoutMs?: number } = {}): Promise<void> {
    if (!this.#closePromise) {
      this.#closed = true;
      this.#closePromise = Promise.all([...this.#subs].map((s) => s.close(options))).then(() => undefined);
    }
    return this.#closePromise;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #rebalance(g: Group, partitions: number): void {
    g.chain = g.chain.then(async () => {
      const members = g.members.slice();
      const target = (p: number): LogSubscription | undefined => (members.length ? members[p % members.length] : undefined);
      // Revoke first (cleanly), then assign.
      await Promise.all(
        members.map(async (m) => {
          for (const p of m.assignment()) if (target(p) !== m) await m.revoke(p, false);
        }),
      );
      for (let p = 0; p < partitions; p++) {
        const m = target(p);
        if (m && !m.assignment().includes(p)) await m.assign(p);
      }
    });
  }

  #topic(name: string, partitions?: number): Topic {
    let t = this.#topics.get(name);
    if (t) {
      if (partitions !== undefined && partitions !== t.partitions.length) {
        throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `topic "${name}" has ${t.partitions.length} partitions, not ${partitions}`);
      }
      return t;
    }
    if (!TOPIC_NAME_RE.test(name)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `topic name must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(name)})`);
    const n = partitionCount(partitions ?? this.#defaultPartitions);
    t = { name, partitions: Array.from({ length: n }, () => ({ records: [], base: 0, next: 0 })), listeners: new Set(), rr: new RoundRobin(), retentionDropped: 0 };
    this.#topics.set(name, t);
    return t;
  }

  #open(): void {
    if (this.#closed) throw new HeraldError('HERALD_ERR_CLOSED', 'memory transport is closed');
  }
}

export function tooLarge(topic: string, id: string, size: number, max: number): HeraldError {
  return new HeraldError('HERALD_ERR_PAYLOAD_TOO_LARGE', `message "${id}" to "${topic}" is ${size} bytes encoded; the limit is ${max}`, {
    details: { topic, id, size, maxPayloadBytes: max },
  });
}

function memoryLag(topics: ReadonlyMap<string, Topic>, groups: ReadonlyMap<string, Group>, filter: { readonly group?: string; readonly topic?: string }): PartitionLag[] {
  const out: PartitionLag[] = [];
  for (const [gkey, g] of groups) {
    const [topic, group] = gkey.split('\u0000') as [string, string];
    const t = topics.get(topic);
    if (!t || (filter.group !== undefined && filter.group !== group) || (filter.topic !== undefined && filter.topic !== topic)) continue;
    t.partitions.forEach((part, p) => {
      const committed = g.committed[p]!;
      const first = part.records[Math.max(0, committed + 1 - part.base)];
      const time = first?.envelope?.time === undefined ? undefined : Date.parse(first.envelope.time);
      out.push({
        topic,
        group,
        partition: p,
        head: String(part.next - 1),
        committed: String(committed),
        messages: first === undefined ? 0 : part.next - first.offset,
        oldestUnhandledAt: time !== undefined && Number.isFinite(time) ? time : undefined,
      });
    });
  }
  return out;
}
