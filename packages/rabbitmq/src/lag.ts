/**
 * Consumer lag on RabbitMQ (`LagSource`), read over AMQP 0-9-1 only, with no effect on delivery.
 *
 * RabbitMQ gives no side-effect-free look at a quorum queue's head over AMQP: queue.declare-ok
 * counts ready messages only, and basic.get + requeue moves the message (3.10 quorum queues
 * requeue at the back) and bumps its delivery count. So the transport keeps two small side
 * structures in **stream** queues, which consumers read from an offset without consuming:
 *
 * - a *pulse* stream per (topic, partition): markers are sampled in time. A publisher appends an
 *   empty marker right behind the first message it sends to the partition and then behind the
 *   first one sent when its previous marker there is at least `lagMarkIntervalMs` old, plus one
 *   trailing marker for its newest message once that long has passed since its previous marker
 *   (so the messages after a burst get counted). A marker carries the position (messageId) and
 *   publish time of the message it follows, and how many of the publisher's messages on the
 *   partition it accounts for since its previous marker there (`herald-pulse-count`; 1 when
 *   absent). Markers are not awaited by the publish they follow (a lost one only makes ages
 *   coarser). `lag()` walks the markers back from the stream's end, adding up their counts,
 *   to the newest marker at or before the oldest of a group's `n` unhandled messages (at
 *   position p, published at T): its time is in [T − interval, T], so the reported age is at
 *   most one interval too old (messages a publisher sent in the last interval are not yet
 *   counted; for that long after a burst the age can be older still). Bounded by
 *   `x-max-length-bytes` (older markers go first).
 * - a *group registry* stream per namespace: every transport appends {topic, group,
 *   partitions} when it declares a group's queues, so `lag()` finds other processes' groups
 *   (AMQP cannot list queues). Read incrementally: each transport remembers where it stopped.
 *
 * A group's `messages` per partition = the partition queue's ready count (passive declare)
 * plus the deliveries this transport's own subscriptions hold unacked (another process's
 * unacked deliveries are invisible over AMQP: at most its prefetch per partition).
 */
import { createHash } from 'node:crypto';
import type { AsyncMessage, Channel } from 'rabbitmq-client';

/** Header of a pulse marker: epoch ms at which the publisher sent the message. */
export const PUBLISHED_AT_HEADER = 'herald-published-at';

/** Header of a pulse marker: messages of its publisher on the partition it accounts for (those after that publisher's previous marker, up to and including its own). */
export const PULSE_COUNT_HEADER = 'herald-pulse-count';

/** Arguments of the pulse and registry streams (size-bounded; streams do not take x-expires). */
export const PULSE_ARGS: Readonly<Record<string, unknown>> = Object.freeze({
  'x-queue-type': 'stream',
  'x-max-length-bytes': 16 * 1024 * 1024,
  'x-stream-max-segment-size-bytes': 1024 * 1024,
});
export const REGISTRY_ARGS: Readonly<Record<string, unknown>> = Object.freeze({
  'x-queue-type': 'stream',
  'x-max-length-bytes': 64 * 1024 * 1024,
  'x-stream-max-segment-size-bytes': 4 * 1024 * 1024,
});

function fit(name: string): string {
  if (Buffer.byteLength(name, 'utf8') <= 255) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 32);
  const head = Buffer.from(name, 'utf8').subarray(0, 200).toString('utf8').replace(/\uFFFD+$/, '');
  return `${head}~${hash}`;
}

/** Pulse stream of one (topic, partition); `exchange` is the topic's exchange name. */
export function pulseQueue(exchange: string, partition: number): string {
  return fit(`${exchange}:pulse:${partition}`);
}

/** The namespace's group registry stream. */
export function registryQueue(namespace: string): string {
  return `${namespace}:lag:groups`;
}

export interface GroupRecord {
  readonly topic: string;
  readonly group: string;
  readonly partitions: number;
}

export function encodeGroupRecord(r: GroupRecord): Buffer {
  return Buffer.from(JSON.stringify({ t: r.topic, g: r.group, p: r.partitions }), 'utf8');
}

export function decodeGroupRecord(body: unknown): GroupRecord | undefined {
  try {
    const v: unknown = Buffer.isBuffer(body) ? JSON.parse(body.toString('utf8')) : typeof body === 'string' ? JSON.parse(body) : body;
    if (typeof v !== 'object' || v === null) return undefined;
    const { t, g, p } = v as { t?: unknown; g?: unknown; p?: unknown };
    if (typeof t !== 'string' || typeof g !== 'string' || typeof p !== 'number' || !Number.isInteger(p) || p < 1) return undefined;
    return { topic: t, group: g, partitions: p };
  } catch {
    return undefined;
  }
}

/** The stream offset the broker stamped on a delivery from a stream. */
export function streamOffset(m: AsyncMessage): number | undefined {
  const v = (m.headers as Record<string, unknown> | undefined)?.['x-stream-offset'];
  return typeof v === 'number' ? v : typeof v === 'bigint' ? Number(v) : undefined;
}

export interface ReadOptions {
  /** Stop after this many entries. */
  readonly take: number;
  /** After an entry, stop when no other arrives within this long, ms (the end of the log has no marker over AMQP). */
  readonly quietMs: number;
  /** Stop at the entry with this offset or a later one (a known end: no quiet wait). */
  readonly until?: number;
  /** Stop when nothing arrives within this long, ms (an empty stream, or an offset past the end). */
  readonly waitMs: number;
}

/**
 * Reads entries of a stream from `offset` with a transient consumer on `ch` (which must have a
 * basic.qos prefetch set). Nothing is acknowledged: a stream read moves no one's position.
 */
export function readStream(ch: Channel, queue: string, offset: number | 'first' | 'last', o: ReadOptions): Promise<AsyncMessage[]> {
  return new Promise<AsyncMessage[]>((resolve, reject) => {
    const got: AsyncMessage[] = [];
    let done = false;
    let tag: string | undefined;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (tag !== undefined && ch.active) ch.basicCancel({ consumerTag: tag }).catch(() => {});
      resolve(got);
    };
    const arm = (ms: number): void => {
      clearTimeout(timer);
      timer = setTimeout(finish, ms);
    };
    ch.basicConsume({ queue, noAck: false, arguments: { 'x-stream-offset': offset } }, (m) => {
      if (done) return;
      got.push(m);
      // Credit for the next entry (a stream ack moves nothing: there is no position to move).
      if (ch.active) void ch.basicAck({ deliveryTag: m.deliveryTag });
      const at = o.until === undefined ? undefined : streamOffset(m);
      if (got.length >= o.take || (at !== undefined && at >= o.until!)) finish();
      else arm(o.quietMs);
    }).then(
      (r) => {
        tag = r.consumerTag;
        if (done) {
          if (ch.active) ch.basicCancel({ consumerTag: tag }).catch(() => {});
        } else if (got.length === 0) arm(o.waitMs);
      },
      (e: unknown) => {
        done = true;
        clearTimeout(timer);
        reject(e);
      },
    );
  });
}
