/**
 * Who is in a consumer group, as seen by one member. RabbitMQ has no consumer-group
 * coordinator for AMQP 0-9-1 and does not tell a waiting single-active consumer that it became
 * active, so members announce themselves on a per-(topic, group) fanout exchange:
 *
 * - each member binds an exclusive, server-named queue (gone with its connection) to the
 *   exchange and publishes `hello` on joining, a `beat` every `heartbeatMs`, `bye` on leaving;
 * - a member answers a `hello` with a `beat`, so a newcomer learns the group within a round trip;
 * - a peer not heard from for `timeoutMs` is dropped (a crashed process, a lost connection).
 *
 * The view only decides which partition queues a member *consumes*. It is not what keeps one
 * reader per partition: every partition queue has `x-single-active-consumer`, so when two
 * members' views disagree for a while, the broker still delivers a queue to one consumer at a
 * time, and a wrongly dropped peer costs nothing but a waiting consumer.
 */
import type { Clock } from '@herald/core';
import type { AsyncMessage, Channel, Connection } from 'rabbitmq-client';

export interface MembershipOptions {
  readonly connection: Connection;
  readonly exchange: string;
  readonly memberId: string;
  readonly heartbeatMs: number;
  readonly timeoutMs: number;
  readonly clock: Clock;
  /** Called (synchronously) whenever the member list changes. */
  readonly onChange: () => void;
  readonly onError: (e: unknown) => void;
}

interface Announcement {
  readonly m: string;
  readonly k: 'hello' | 'beat' | 'bye';
}

export class Membership {
  readonly #o: MembershipOptions;
  /** Peer id → monotonic time last heard from. */
  readonly #peers = new Map<string, number>();
  #ch: Channel | undefined;
  #timer: { cancel(): void } | undefined;
  #stopped = false;
  #starting: Promise<void> | undefined;

  constructor(options: MembershipOptions) {
    this.#o = options;
  }

  /** The group as this member sees it, sorted, itself included. */
  members(): string[] {
    return [...this.#peers.keys(), this.#o.memberId].sort();
  }

  /** True while the announcement channel is open. */
  get joined(): boolean {
    return this.#ch?.active === true;
  }

  /**
   * Declares the exchange and this member's queue, says hello and starts the heartbeat.
   * Idempotent while running; call again after a lost connection to rejoin. Rejects when the
   * broker refuses (the caller retries).
   */
  start(): Promise<void> {
    if (this.#stopped) return Promise.resolve();
    if (this.joined) return Promise.resolve();
    this.#starting ??= this.#start().finally(() => {
      this.#starting = undefined;
    });
    return this.#starting;
  }

  async #start(): Promise<void> {
    const ch = await this.#o.connection.acquire({ emitErrorsFromChannel: true });
    ch.on('error', (e) => this.#o.onError(e));
    try {
      // The exchange goes away with its last binding; a declare racing with that is retried.
      for (let attempt = 1; ; attempt++) {
        try {
          await ch.exchangeDeclare({ exchange: this.#o.exchange, type: 'fanout', durable: false, autoDelete: true });
          const { queue } = await ch.queueDeclare({ queue: '', exclusive: true, autoDelete: true, durable: false });
          await ch.queueBind({ queue, exchange: this.#o.exchange });
          await ch.basicConsume({ queue, noAck: true, exclusive: true }, (msg) => this.#onMessage(msg));
          break;
        } catch (e) {
          if (attempt >= 3 || !ch.active) throw e;
        }
      }
    } catch (e) {
      await ch.close().catch(() => {});
      throw e;
    }
    if (this.#stopped) {
      await ch.close().catch(() => {});
      return;
    }
    this.#ch = ch;
    ch.on('close', () => {
      if (this.#ch === ch) this.#ch = undefined;
    });
    this.#announce('hello');
    this.#schedule();
  }

  /** Says bye and closes the announcement channel. Idempotent. */
  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#timer?.cancel();
    await this.#starting?.catch(() => {});
    const ch = this.#ch;
    this.#ch = undefined;
    if (ch?.active) {
      await this.#publish(ch, 'bye');
      await ch.close().catch(() => {});
    }
  }

  #schedule(): void {
    this.#timer?.cancel();
    this.#timer = this.#o.clock.setTimer(
      () => {
        if (this.#stopped) return;
        if (this.#ch?.active) this.#announce('beat');
        this.#sweep();
        this.#schedule();
      },
      this.#o.heartbeatMs,
      { unref: true },
    );
  }

  #sweep(): void {
    const oldest = this.#o.clock.monotonic() - this.#o.timeoutMs;
    let changed = false;
    for (const [id, seen] of this.#peers) {
      if (seen < oldest) {
        this.#peers.delete(id);
        changed = true;
      }
    }
    if (changed) this.#o.onChange();
  }

  #announce(kind: Announcement['k']): void {
    const ch = this.#ch;
    if (ch?.active) void this.#publish(ch, kind);
  }

  async #publish(ch: Channel, kind: Announcement['k']): Promise<void> {
    try {
      await ch.basicPublish({ exchange: this.#o.exchange, routingKey: '' }, Buffer.from(JSON.stringify({ m: this.#o.memberId, k: kind } satisfies Announcement)));
    } catch (e) {
      if (ch.active) this.#o.onError(e);
    }
  }

  #onMessage(msg: AsyncMessage): void {
    let a: Announcement;
    try {
      const body: unknown = Buffer.isBuffer(msg.body) ? JSON.parse(msg.body.toString('utf8')) : msg.body;
      if (typeof body !== 'object' || body === null || typeof (body as Announcement).m !== 'string') return;
      a = body as Announcement;
    } catch {
      return;
    }
    if (a.m === this.#o.memberId || this.#stopped) return;
    if (a.k === 'bye') {
      if (this.#peers.delete(a.m)) this.#o.onChange();
      return;
    }
    const isNew = !this.#peers.has(a.m);
    this.#peers.set(a.m, this.#o.clock.monotonic());
    if (a.k === 'hello') this.#announce('beat');
    if (isNew) this.#o.onChange();
  }
}

/** Partition → owner: the sorted members take partitions round-robin. */
export function ownedBy(members: readonly string[], memberId: string, partitions: number): Set<number> {
  const out = new Set<number>();
  const n = members.length;
  const i = members.indexOf(memberId);
  if (i < 0 || n === 0) return out;
  for (let p = 0; p < partitions; p++) if (p % n === i) out.add(p);
  return out;
}
