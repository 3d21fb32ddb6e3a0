/**
 * Given/when/then for sagas, without I/O — the saga's `decideSaga` run on a fixed clock:
 *
 *   const given = SagaSpecification.for(checkoutSaga);
 *   const { event, timeout } = SagaSpecification;
 *
 *   it('refunds when the stock is short', () =>
 *     given([event(OrderPlaced, order), event(PaymentSucceeded, paid)])
 *       .when(event(InventoryReservationFailed, { orderId: 'o-1', reason: 'out of stock' }))
 *       .then({ status: 'compensating', sent: [send(RefundPayment, { orderId: 'o-1', amount: 42 })] }));
 *
 *   it('compensates when shipping times out', () =>
 *     given([placed, paid, reserved]).when(timeout()).then({ sent: [send(ReleaseInventory, …)] }));
 *
 * `event(definition, data)` is an incoming event (a start or a reply); `timeout()` fires the
 * timer the instance is waiting on (time jumps to its due time) — it fails the specification
 * when no timer is pending. `then` checks only what it is given: `status`, `sent` (the exact
 * messages the `when` step sent, in order, compared as `{ type, data }` — plus `topic`/`key`
 * when the expectation names them), `state` (deep equality) or a `check(instance, sent)`
 * callback; every mismatch is an `AssertionError` showing what happened.
 */
import assert, { AssertionError } from 'node:assert/strict';
import type { EventDefinition } from '@herald/core';
import { decideSaga, type SagaDefinition, type SagaInput, type SagaInstance, type SagaMessage, type SagaOutgoing, type SagaStatus, type SagaTimelineEntry } from './saga.ts';

/** A step of a specification: an incoming event, a timer firing, or an operator's resume. */
export type SagaSpecInput = { readonly kind: 'event'; readonly type: string; readonly data: unknown } | { readonly kind: 'timeout' } | { readonly kind: 'resume' };

/** An incoming event for `given`/`when`. */
export function event<T>(definition: EventDefinition<T>, data: NoInfer<T>): SagaSpecInput {
  return { kind: 'event', type: definition.type, data };
}

/** The pending timer fires. */
export function timeout(): SagaSpecInput {
  return { kind: 'timeout' };
}

/** An operator resumes a stuck instance. */
export function resume(): SagaSpecInput {
  return { kind: 'resume' };
}

export interface SagaExpectation<State> {
  readonly status?: SagaStatus;
  /** Exactly these messages, in order (compared as type + data; topic and key when given). */
  readonly sent?: readonly SagaMessage[];
  readonly state?: State;
  /** Whether a timer is pending after the step. */
  readonly timerPending?: boolean;
  readonly check?: (instance: SagaInstance<State> | undefined, sent: readonly SagaOutgoing[], timeline: readonly SagaTimelineEntry[]) => void;
}

export interface SagaThen<State> {
  then(expected: SagaExpectation<State>): void;
  /** Asserts the `when` step sent exactly `messages`. */
  thenSent(messages: readonly SagaMessage[]): void;
  /** Asserts the instance's status after the `when` step. */
  thenStatus(status: SagaStatus): void;
  /** Runs `check` on the state after the `when` step. */
  thenState(check: (state: State) => void): void;
}

export interface SagaWhen<State> {
  when(input: SagaSpecInput): SagaThen<State>;
}

/** Fixed start time of a specification: 2024-01-01T00:00:00.000Z. */
export const SAGA_SPEC_EPOCH = Date.UTC(2024, 0, 1);

interface Run<State> {
  readonly instance: SagaInstance<State> | undefined;
  readonly sent: readonly SagaOutgoing[];
  readonly timeline: readonly SagaTimelineEntry[];
}

export const SagaSpecification = {
  /** An incoming event (see `event`). */
  event,
  /** The pending timer fires (see `timeout`). */
  timeout,
  /** An operator resumes a stuck instance (see `resume`). */
  resume,
  for<State>(saga: SagaDefinition<State>): (given?: readonly SagaSpecInput[]) => SagaWhen<State> {
    return (given = []) => ({
      when(input: SagaSpecInput): SagaThen<State> {
        const run = (): Run<State> => {
          let instance: SagaInstance<State> | undefined;
          let now = SAGA_SPEC_EPOCH;
          let pending: { id: string; deliverAt: number; input: SagaInput } | undefined;
          let n = 0;
          const apply = (i: SagaSpecInput, label: string): Run<State> => {
            let sagaInput: SagaInput;
            if (i.kind === 'event') sagaInput = { kind: 'event', type: i.type, data: i.data, messageId: `spec-${++n}` };
            else if (i.kind === 'resume') sagaInput = { kind: 'resume' };
            else {
              if (!pending || instance?.timer !== pending.id) {
                throw new AssertionError({ message: `${label}: timeout() but the instance waits on no timer (status ${instance?.status ?? 'none'})`, operator: 'timeout' });
              }
              now = Math.max(now, pending.deliverAt);
              sagaInput = pending.input;
            }
            const d = decideSaga(saga, instance, sagaInput, { now, newId: () => 'instance-1' });
            if (d.instance) instance = d.instance;
            const t = d.timers[d.timers.length - 1];
            if (t) pending = { id: t.id, deliverAt: t.deliverAt, input: { kind: 'timer', timer: t } };
            return { instance, sent: d.outgoing, timeline: d.timeline };
          };
          given.forEach((g, i) => apply(g, `given[${i}]`));
          return apply(input, 'when');
        };
        const check = (e: SagaExpectation<State>): void => {
          const r = run();
          if (e.status !== undefined) assert.equal(r.instance?.status, e.status, `expected status ${e.status}, got ${r.instance?.status ?? 'no instance'} (timeline: ${summary(r.timeline)})`);
          if (e.sent !== undefined) {
            const want = e.sent.map((m) => ({ type: m.definition.type, data: m.data, ...(m.topic !== undefined ? { topic: m.topic } : {}), ...(m.key !== undefined ? { key: m.key } : {}) }));
            const got = r.sent.map((m, i) => ({
              type: m.definition.type,
              data: m.data,
              ...(e.sent![i]?.topic !== undefined ? { topic: m.topic } : {}),
              ...(e.sent![i]?.key !== undefined ? { key: m.key } : {}),
            }));
            assert.deepStrictEqual(got, want, 'the messages sent differ from those expected');
          }
          if (e.state !== undefined) assert.deepStrictEqual(r.instance?.state, e.state, 'the saga state differs from the one expected');
          if (e.timerPending !== undefined) assert.equal(r.instance?.timer !== undefined, e.timerPending, `expected ${e.timerPending ? 'a' : 'no'} pending timer`);
          e.check?.(r.instance, r.sent, r.timeline);
        };
        return {
          then: check,
          thenSent: (sent) => check({ sent }),
          thenStatus: (status) => check({ status }),
          thenState: (fn) => check({ check: (i) => fn(i?.state as State) }),
        };
      },
    });
  },
};

function summary(timeline: readonly SagaTimelineEntry[]): string {
  return timeline.map((t) => `${t.kind}${t.step ? `(${t.step})` : ''}${t.detail ? `: ${t.detail}` : ''}${t.error ? ` ! ${t.error}` : ''}`).join(', ') || 'nothing';
}
