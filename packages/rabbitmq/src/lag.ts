/**
 * Consumer lag on RabbitMQ (`LagSource`), read over AMQP 0-9-1 only, with no effect on delivery.
 *
 * RabbitMQ gives no side-effect-free look at a quorum queue's head over AMQP: queue.declare-ok
 * counts ready messages only, and basic.get + requeue moves the message (3.10 quorum queues
 * requeue at the back) and bumps its delivery count. So the transport keeps two small side
 * structures in **stream** queues, which consumers read from an offset without consuming:
 *
 * - a *pulse* stream per (topic, partition): publishers append one empty marker per message,
 *   right after the message on the same channel, carrying its position (messageId) and the
 *   publish time. The marker `n` back from the stream's end is the message `n` back from the
 *   partition's newest one, so the oldest of a group's `n` unhandled messages is dated by one
 *   offset read. Bounded by `x-max-length-bytes` (older markers go first).
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
      if (got.length >= o.take) finish();
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
