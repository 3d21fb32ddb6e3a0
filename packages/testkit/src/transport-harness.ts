/**
 * The harness the transport contract's scenarios run in: a fresh transport per scenario, a
 * scope that closes everything, collectors that record deliveries, bounded waits that name
 * what they waited for. Exported for backends writing scenarios of their own.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { TestContext } from 'node:test';
import {
  createEnvelope,
  type DeadLetterStore,
  type Delivery,
  type HeraldErrorCode,
  isHeraldError,
  type OutgoingMessage,
  type SubscribeOptions,
  type Subscription,
  type Transport,
  type TransportCapabilities,
} from '@herald/core';
import { DEFAULT_WAIT_MS, Scope, uniqueName, waitFor, withScope } from './helpers.ts';

export interface TransportContractOptions {
  /** A transport on a fresh, isolated backend. */
  readonly create: () => Promise<Transport>;
  /** Another transport instance on the same backend as `first` (or `first` itself when members share one instance). */
  readonly createInGroup?: (first: Transport) => Promise<Transport>;
  /** Restarts the broker; resolves when it accepts connections again. */
  readonly restartBroker?: () => Promise<void>;
  /** The dead-letter store the router scenarios use with `transport` (default: in memory). */
  readonly deadLetters?: (transport: Transport) => DeadLetterStore | Promise<DeadLetterStore>;
  /**
   * How long a consumer group may take to form or rebalance, ms (default 2000, the wait every
   * other step keeps). Only for brokers whose coordinator itself delays joins — e.g. librdkafka's
   * mock cluster holds a new group's first join for 3 s and every rebalance for the session
   * timeout − 1 s. Applies only to waits that depend on the group forming or rebalancing:
   * partition assignment, and the redeliveries that follow a member leaving or joining.
   */
  readonly groupWaitMs?: number;
  /**
   * Set (to the reason) when the backend cannot give a new topic the partition count asked for
   * (a mock cluster that auto-creates every topic with a fixed count); the partition-count
   * scenario then skips with that reason.
   */
  readonly cannotChoosePartitions?: string;
}

export type TransportScenario = (t: TestContext, options: TransportContractOptions) => Promise<void>;

/** A capability a scenario needs: a `true` boolean capability, a finite payload limit, or a harness hook. */
export type Need = 'consumerGroups' | 'replay' | 'persistent' | 'multiProcess' | 'finitePayloadLimit' | 'restartBroker' | 'choosePartitions';

/** How long the suites wait after a set is complete, to catch extra or duplicate deliveries. */
export const SETTLE_MS = 150;
export const MESSAGE_TYPE = 'contract.message';

// ── the harness every scenario gets ──────────────────────────────────────

/** Reads a subscription in the background, recording every delivery; `onDelivery` decides what to do with each (default: ack). */
export class Collector {
  readonly deliveries: Delivery[] = [];
  readonly errors: unknown[] = [];
  /** Resolves when the subscription's iterator ends. */
  readonly done: Promise<void>;

  constructor(
    readonly sub: Subscription,
    readonly label: string,
    onDelivery: (d: Delivery, c: Collector) => void | Promise<void> = (d) => d.ack(),
  ) {
    this.done = (async () => {
      for await (const d of sub) {
        this.deliveries.push(d);
        try {
          await onDelivery(d, this);
        } catch (e) {
          this.errors.push(e);
        }
      }
    })().catch((e) => {
      this.errors.push(e);
    });
  }

  ids(): string[] {
    return this.deliveries.map(idOf);
  }

  of(id: string): Delivery[] {
    return this.deliveries.filter((d) => idOf(d) === id);
  }
}

export function idOf(d: Delivery): string {
  return d.envelope?.id ?? `(undecodable ${d.partition}@${d.position})`;
}

export class TransportHarness {
  readonly topic = uniqueName('t');
  /** Short random id in every message id of the scenario. */
  readonly run = randomUUID().slice(0, 8);
  #peer: Transport | undefined;

  constructor(
    readonly t: TestContext,
    readonly scope: Scope,
    readonly options: TransportContractOptions,
    readonly transport: Transport,
  ) {}

  get caps(): TransportCapabilities {
    return this.transport.capabilities;
  }

  group(): string {
    return uniqueName('g');
  }

  /** The second member's transport (createInGroup), made once per scenario and closed at the end. */
  async peer(): Promise<Transport> {
    if (this.#peer) return this.#peer;
    const p = this.options.createInGroup ? await this.options.createInGroup(this.transport) : this.transport;
    if (p !== this.transport) this.scope.defer('close the peer transport', () => p.close({ timeoutMs: 500 }));
    this.#peer = p;
    return p;
  }

  /** Another transport on a fresh backend, closed at the end. */
  async fresh(): Promise<Transport> {
    const tr = await this.options.create();
    return this.scope.defer('close a transport', () => tr.close({ timeoutMs: 500 }), tr);
  }

  subscribe(transport: Transport, options: SubscribeOptions, topic = this.topic): Subscription {
    const s = transport.subscribe(topic, options);
    return this.scope.defer(`close the subscription of group ${options.group}`, () => s.close({ timeoutMs: 200 }), s);
  }

  consume(sub: Subscription, label: string, onDelivery?: (d: Delivery, c: Collector) => void | Promise<void>): Collector {
    return new Collector(sub, label, onDelivery);
  }

  async partitions(topic = this.topic): Promise<number> {
    return (await this.transport.ensureTopic(topic)).partitions;
  }

  /** A test message: id `<run>-<i>`, data `{ i, key }`; the key is given as the publish option or (keyVia 'envelope') as `partitionkey`. */
  message(i: number, key?: string, keyVia: 'option' | 'envelope' = 'option'): OutgoingMessage {
    const envelope = createEnvelope({
      type: MESSAGE_TYPE,
      source: 'herald-testkit/transport',
      id: `${this.run}-${i}`,
      subject: `item/${i}`,
      data: { i, key: key ?? null, text: 'héllo ✓ 🚀', nested: { list: [1, 2.5, true, null] } },
      ...(key !== undefined && keyVia === 'envelope' ? { partitionkey: key } : {}),
      correlationid: `corr-${this.run}`,
      extensions: { contractrun: this.run },
    });
    return key !== undefined && keyVia === 'option' ? { envelope, key } : { envelope };
  }

  messages(from: number, count: number, keyOf: (i: number) => string | undefined): OutgoingMessage[] {
    return Array.from({ length: count }, (_, j) => this.message(from + j, keyOf(from + j)));
  }

  /** How long a wait that depends on the group forming or rebalancing may take (the `groupWaitMs` option, at least the default). */
  get groupWaitMs(): number {
    return Math.max(DEFAULT_WAIT_MS, this.options.groupWaitMs ?? DEFAULT_WAIT_MS);
  }

  /** Waits until the subscriptions' assignments cover every partition exactly once (and, with `each`, every one owns some). */
  async waitAssigned(subs: readonly Subscription[], partitions: number, what: string, each = false): Promise<void> {
    await waitFor(
      () => {
        const as = subs.map((s) => s.assignment());
        const all = as.flat();
        return all.length === partitions && new Set(all).size === partitions && (!each || as.every((a) => a.length > 0));
      },
      {
        timeoutMs: this.groupWaitMs, what: () => `${what}: assignments ${subs.map((s) => `[${s.assignment().join(',')}]`).join(' ')} should cover ${partitions} partitions once${each ? ', each member owning some' : ''}` },
    );
  }

  /** Waits until every id in `ids` was received by one of `collectors`. */
  async waitIds(collectors: readonly Collector[], ids: readonly string[], what: string, timeoutMs = DEFAULT_WAIT_MS): Promise<void> {
    const got = (): Set<string> => new Set(collectors.flatMap((c) => c.ids()));
    await waitFor(() => {
      const g = got();
      return ids.every((id) => g.has(id));
    }, {
      timeoutMs,
      what: () => {
        const g = got();
        const missing = ids.filter((id) => !g.has(id));
        return `${what}: ${ids.length - missing.length}/${ids.length} received by ${collectors.map((c) => c.label).join('+')}; MISSING ${preview(missing)}${errorsOf(collectors)}`;
      },
    });
  }
}

export function preview(ids: readonly string[]): string {
  return ids.length <= 10 ? `[${ids.join(', ')}]` : `[${ids.slice(0, 10).join(', ')}, … ${ids.length - 10} more]`;
}

function errorsOf(collectors: readonly Collector[]): string {
  const errs = collectors.flatMap((c) => c.errors.map((e) => `${c.label}: ${(e as Error)?.message ?? String(e)}`));
  return errs.length ? `; collector errors: ${errs.join('; ')}` : '';
}

export const idsOf = (ms: readonly OutgoingMessage[]): string[] => ms.map((m) => m.envelope.id);

function missingNeeds(options: TransportContractOptions, caps: TransportCapabilities | undefined, needs: readonly Need[]): Need[] {
  return needs.filter((n) => {
    if (n === 'restartBroker') return options.restartBroker === undefined;
    if (n === 'choosePartitions') return options.cannotChoosePartitions !== undefined;
    if (!caps) return false;
    if (n === 'finitePayloadLimit') return !Number.isFinite(caps.maxPayloadBytes);
    return caps[n] !== true;
  });
}

function skipReason(missing: readonly Need[]): string {
  return missing
    .map((n) =>
      n === 'restartBroker' ? 'needs restartBroker (the harness cannot restart the broker)' : n === 'finitePayloadLimit' ? 'needs capability maxPayloadBytes (finite)' : `needs capability ${n}`,
    )
    .join('; ');
}

/**
 * Runs a scenario body with a fresh transport and a scope that closes everything; skips (with
 * the reason) when the transport lacks a capability in `needs`.
 */
export async function withTransport(t: TestContext, options: TransportContractOptions, needs: readonly Need[], body: (h: TransportHarness) => Promise<void>): Promise<void> {
  const early = missingNeeds(options, undefined, needs);
  if (early.length > 0) {
    t.skip(early.includes('choosePartitions') ? `cannot choose a topic's partition count: ${options.cannotChoosePartitions}` : skipReason(early));
    return;
  }
  await withScope(async (scope) => {
    const transport = await options.create();
    scope.defer('close the transport', () => transport.close({ timeoutMs: 500 }));
    const missing = missingNeeds(options, transport.capabilities, needs);
    if (missing.length > 0) {
      t.skip(skipReason(missing));
      return;
    }
    await body(new TransportHarness(t, scope, options, transport));
  });
}

export async function rejectsWith(p: () => unknown, code: HeraldErrorCode, label: string): Promise<void> {
  let result: unknown;
  try {
    result = await p();
  } catch (e) {
    assert.ok(isHeraldError(e, code), `${label}: expected ${code}, got ${isHeraldError(e) ? e.code : 'a non-Herald error'}: ${String(e)}`);
    return;
  }
  assert.fail(`${label}: expected a rejection with ${code}, but it succeeded (${safeShow(result)})`);
}

function safeShow(v: unknown): string {
  try {
    const s = JSON.stringify(v);
    return s === undefined ? String(v) : s.length > 120 ? `${s.slice(0, 120)}…` : s;
  } catch {
    return String(v);
  }
}

/** Resolves `p` or fails after `ms` naming `what`. */
export async function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      p,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what}: not done within ${ms} ms` })), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}
