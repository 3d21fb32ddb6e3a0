/**
 * Orchestrated sagas: a definition as data plus one pure transition function.
 *
 *   const checkout = defineSaga({
 *     name: 'checkout',
 *     startedBy: { event: OrderPlaced, key: (o) => o.orderId, init: (o) => ({ ...o }) },
 *     steps: [
 *       {
 *         name: 'payment',
 *         action: (s) => send(ChargePayment, { orderId: s.orderId, amount: s.total }),
 *         replies: [onSuccess(PaymentSucceeded, (s, d) => ({ ...s, paymentId: d.paymentId })), onFailure(PaymentFailed)],
 *         compensation: { action: (s) => send(RefundPayment, { orderId: s.orderId }), replies: [onSuccess(PaymentRefunded)] },
 *         timeoutMs: 30_000,
 *         retry: { maxAttempts: 3 },
 *       },
 *       …
 *     ],
 *     onCompensated: (s) => send(CancelOrder, { orderId: s.orderId }),
 *   });
 *
 * An instance is identified by (saga name, key). It moves through its steps in order: a step
 * sends its action's messages and waits for one of its replies (a step without replies
 * completes once sent; an action returning nothing skips the step). A success reply moves to
 * the next step; a failure reply, a timeout past the retry policy, or an action that throws
 * fails the step, and the compensations of the steps already completed run in reverse order.
 * A step that timed out may have taken effect, so its own compensation runs too (compensations
 * must tolerate "nothing to undo"); a step that replied failure did not, so its own does not.
 *
 * Statuses: `running` → `completed`, or `running` → `compensating` → `compensated`; a
 * compensation that fails (failure reply or timeout) past its retry policy, or whose action
 * throws, leaves the instance `stuck` with the error: terminal, visible, never silent, until an
 * operator resumes it (`resume`).
 *
 * Timers are data: `decideSaga` returns the timers to schedule (`SagaTimer`, with a stable id
 * `<instance>/<step>/<phase>/<attempt>[/retry]`) and the ids to cancel; the runtime turns them
 * into delayed messages of type `herald.saga.timeout` on the saga's own topic. A timer that is
 * not the instance's pending one (fired twice, cancelled too late, left behind by a reply) is
 * ignored. Outgoing message ids are stable too (`<instance>:<step>:<phase>:<attempt>:<n>`), so a
 * participant's inbox can deduplicate a resend of the same attempt.
 *
 * `decideSaga` is pure: no I/O, no clock (time comes in `now`), no randomness (a new instance
 * id comes from `newId`). User functions (`init`, `action`, `update`, …) must be pure as well
 * and the state must be JSON (stores serialize it).
 */
import { HeraldError, type CloudEvent, type EventDefinition, type MessageDefinition } from '@herald/core';

export type SagaStatus = 'running' | 'compensating' | 'completed' | 'compensated' | 'stuck';
export const SAGA_STATUSES: readonly SagaStatus[] = Object.freeze(['running', 'compensating', 'completed', 'compensated', 'stuck']);
/** Statuses that no event moves on (except `resume` for `stuck`). */
export const TERMINAL_SAGA_STATUSES: readonly SagaStatus[] = Object.freeze(['completed', 'compensated', 'stuck']);

/** CloudEvents type of a saga timer message. */
export const SAGA_TIMER_TYPE = 'herald.saga.timeout';

/** One message a saga sends (a command or an event). */
export interface SagaMessage<T = unknown> {
  readonly definition: MessageDefinition<T>;
  readonly data: T;
  /** Default: the definition's topic. */
  readonly topic?: string;
  /** Partition key; default: the definition's `keyField` value, else the instance key. */
  readonly key?: string;
}

/** A typed `SagaMessage`. */
export function send<T>(definition: MessageDefinition<T>, data: NoInfer<T>, options: { readonly topic?: string; readonly key?: string } = {}): SagaMessage<T> {
  return { definition, data, ...(options.topic !== undefined ? { topic: options.topic } : {}), ...(options.key !== undefined ? { key: options.key } : {}) };
}

export type SagaActionResult = SagaMessage<any> | readonly SagaMessage<any>[] | undefined | null;

export interface SagaReply<State, T = any> {
  readonly event: EventDefinition<T>;
  readonly outcome: 'success' | 'failure';
  /** Folds the reply's data into the state. */
  readonly update?: (state: State, data: T) => State;
  /** Failure replies: the reason recorded (default: the event type). */
  readonly reason?: (data: T) => string;
  /** Topic to consume the reply on (default: the definition's topic). */
  readonly topic?: string;
}

/** A reply that completes the step (or the compensation). */
export function onSuccess<T, State>(event: EventDefinition<T>, update?: (state: State, data: T) => State, options: { readonly topic?: string } = {}): SagaReply<State, T> {
  return { event, outcome: 'success', ...(update ? { update } : {}), ...(options.topic !== undefined ? { topic: options.topic } : {}) };
}

/** A reply that fails the step (forward: compensation starts; compensation: retried, then stuck). */
export function onFailure<T, State>(
  event: EventDefinition<T>,
  options: { readonly update?: (state: State, data: T) => State; readonly reason?: (data: T) => string; readonly topic?: string } = {},
): SagaReply<State, T> {
  return { event, outcome: 'failure', ...options };
}

export interface SagaRetryPolicy {
  /** Attempts in all, the first included (default 1: no retry). */
  readonly maxAttempts: number;
  /** Wait before a retry, ms (default 0: resend at once). */
  readonly delayMs: number;
  /** Growth of the wait per attempt (default 2). */
  readonly multiplier: number;
  /** Upper bound of one wait, ms (default 60 000). */
  readonly maxDelayMs: number;
}

export const DEFAULT_SAGA_RETRY: SagaRetryPolicy = Object.freeze({ maxAttempts: 1, delayMs: 0, multiplier: 2, maxDelayMs: 60_000 });

export interface SagaActionContext {
  readonly key: string;
  readonly instanceId: string;
  /** 1-based attempt of this action. */
  readonly attempt: number;
}

export interface SagaCompensation<State> {
  /** The undo messages; nothing returned = nothing to undo. */
  readonly action: (state: State, ctx: SagaActionContext) => SagaActionResult;
  /** Replies to wait for; none = the compensation is done once its messages are recorded. */
  readonly replies?: readonly SagaReply<State>[];
  /** Time to wait for a reply, per attempt, ms (0 or absent: wait forever). */
  readonly timeoutMs?: number;
  /** Retries on a failure reply or a timeout; past them the instance is stuck. */
  readonly retry?: Partial<SagaRetryPolicy>;
}

export interface SagaStep<State> {
  /** Unique within the saga; stored in instances (renaming a step strands instances in it). */
  readonly name: string;
  /** The step's messages; nothing returned skips the step. */
  readonly action: (state: State, ctx: SagaActionContext) => SagaActionResult;
  /** Replies to wait for; none = the step completes once its messages are recorded. */
  readonly replies?: readonly SagaReply<State>[];
  readonly compensation?: SagaCompensation<State>;
  /** Time to wait for a reply, per attempt, ms (0 or absent: wait forever). */
  readonly timeoutMs?: number;
  /** Resends of the action on timeout; past them the step fails. */
  readonly retry?: Partial<SagaRetryPolicy>;
}

export interface SagaFailure {
  readonly step: string;
  readonly reason: string;
  readonly at: number;
}

export interface SagaError {
  readonly step: string;
  readonly message: string;
  /** Attempts made of the failing compensation. */
  readonly attempts: number;
  readonly at: number;
}

export interface SagaDefinitionInput<State, Start> {
  /** Letters, digits, `.`, `_`, `-` (it names the saga's topic and consumer group). */
  readonly name: string;
  /** Recorded in each instance (default 1). */
  readonly version?: number;
  /** Topic of the saga's timers (default `saga.<name>`). */
  readonly topic?: string;
  readonly startedBy: {
    readonly event: EventDefinition<Start>;
    /** The instance key (the correlation key of every later event). */
    readonly key: (data: Start, envelope: CloudEvent | undefined) => string;
    readonly init: (data: Start) => State;
    /** Topic to consume the start event on (default: the definition's topic). */
    readonly topic?: string;
  };
  readonly steps: readonly SagaStep<State>[];
  /**
   * Instance key of a reply, by event type. Default: the definition's `keyField` value, else
   * the envelope's partition key.
   */
  readonly correlate?: Readonly<Record<string, (data: any, envelope: CloudEvent | undefined) => string | undefined>>;
  /** Messages sent when the last step completed. */
  readonly onCompleted?: (state: State) => SagaActionResult;
  /** Messages sent when every compensation is done. */
  readonly onCompensated?: (state: State, failure: SagaFailure | undefined) => SagaActionResult;
}

interface NormalizedStep<State> extends SagaStep<State> {
  readonly index: number;
  readonly retryPolicy: SagaRetryPolicy;
  readonly compensationRetry: SagaRetryPolicy;
  readonly replyByType: ReadonlyMap<string, SagaReply<State>>;
  readonly compensationReplyByType: ReadonlyMap<string, SagaReply<State>>;
}

export interface SagaDefinition<State = any, Start = any> extends SagaDefinitionInput<State, Start> {
  readonly version: number;
  readonly topic: string;
  readonly steps: readonly NormalizedStep<State>[];
  /** Every reply definition (steps and compensations), once per (topic, type, version). */
  readonly replyEvents: readonly { readonly event: EventDefinition; readonly topic: string }[];
  step(name: string): NormalizedStep<State> | undefined;
}

const NAME_RE = /^[A-Za-z0-9._-]{1,100}$/;

function invalid(message: string): HeraldError {
  return new HeraldError('HERALD_ERR_INVALID_ARGUMENT', message);
}

function retryPolicy(where: string, r: Partial<SagaRetryPolicy> | undefined): SagaRetryPolicy {
  const p = { ...DEFAULT_SAGA_RETRY, ...(r ?? {}) };
  if (!Number.isSafeInteger(p.maxAttempts) || p.maxAttempts < 1) throw invalid(`${where}: retry.maxAttempts must be an integer ≥ 1 (got ${String(p.maxAttempts)})`);
  if (!Number.isFinite(p.delayMs) || p.delayMs < 0) throw invalid(`${where}: retry.delayMs must be ≥ 0 ms (got ${String(p.delayMs)})`);
  if (!Number.isFinite(p.multiplier) || p.multiplier < 1) throw invalid(`${where}: retry.multiplier must be ≥ 1 (got ${String(p.multiplier)})`);
  if (!Number.isFinite(p.maxDelayMs) || p.maxDelayMs < 0) throw invalid(`${where}: retry.maxDelayMs must be ≥ 0 ms (got ${String(p.maxDelayMs)})`);
  return Object.freeze(p);
}

function checkTimeout(where: string, t: number | undefined): void {
  if (t !== undefined && (!Number.isSafeInteger(t) || t < 0)) throw invalid(`${where}: timeoutMs must be a non-negative integer (got ${String(t)})`);
}

function replyMap<State>(where: string, replies: readonly SagaReply<State>[] | undefined): Map<string, SagaReply<State>> {
  const m = new Map<string, SagaReply<State>>();
  for (const r of replies ?? []) {
    if (typeof r !== 'object' || r === null || typeof r.event?.type !== 'string') throw invalid(`${where}: each reply needs an event definition (use onSuccess/onFailure)`);
    if (r.outcome !== 'success' && r.outcome !== 'failure') throw invalid(`${where}: reply "${r.event.type}" outcome must be 'success' or 'failure'`);
    if (m.has(r.event.type)) throw invalid(`${where}: reply "${r.event.type}" is listed twice`);
    m.set(r.event.type, r);
  }
  return m;
}

/** Checks and freezes a saga definition; a problem is `HERALD_ERR_INVALID_ARGUMENT` naming it. */
export function defineSaga<State, Start>(input: SagaDefinitionInput<State, Start>): SagaDefinition<State, Start> {
  if (typeof input !== 'object' || input === null) throw invalid('defineSaga needs a definition object');
  const name = input.name;
  if (typeof name !== 'string' || !NAME_RE.test(name)) throw invalid(`saga name must be 1–100 letters, digits, '.', '_' or '-' (got ${JSON.stringify(name)})`);
  const version = input.version ?? 1;
  if (!Number.isSafeInteger(version) || version < 1) throw invalid(`saga "${name}": version must be a positive integer (got ${String(version)})`);
  const topic = input.topic ?? `saga.${name}`;
  if (typeof topic !== 'string' || !/^[A-Za-z0-9._-]{1,200}$/.test(topic)) throw invalid(`saga "${name}": topic must be a valid topic name (got ${JSON.stringify(topic)})`);
  const sb = input.startedBy;
  if (typeof sb !== 'object' || sb === null || typeof sb.event?.type !== 'string' || typeof sb.key !== 'function' || typeof sb.init !== 'function') {
    throw invalid(`saga "${name}": startedBy needs { event, key(data), init(data) }`);
  }
  if ((sb.topic ?? sb.event.topic) === undefined) throw invalid(`saga "${name}": start event "${sb.event.type}" has no topic (define it with one or pass startedBy.topic)`);
  if (!Array.isArray(input.steps) || input.steps.length === 0) throw invalid(`saga "${name}": steps must be a non-empty array`);
  const byName = new Map<string, NormalizedStep<State>>();
  const replyEvents = new Map<string, { event: EventDefinition; topic: string }>();
  const noteReplies = (where: string, m: Map<string, SagaReply<State>>): void => {
    for (const r of m.values()) {
      const t = r.topic ?? r.event.topic;
      if (t === undefined) throw invalid(`${where}: reply "${r.event.type}" has no topic (define it with one or pass { topic })`);
      if (r.event.type === sb.event.type && t === (sb.topic ?? sb.event.topic)) throw invalid(`${where}: reply "${r.event.type}" is also the start event`);
      replyEvents.set(`${t}\u0000${r.event.type}\u0000${r.event.version}`, { event: r.event, topic: t });
    }
  };
  const steps = input.steps.map((s, index) => {
    const where = `saga "${name}" step ${index}`;
    if (typeof s !== 'object' || s === null || typeof s.name !== 'string' || !NAME_RE.test(s.name)) throw invalid(`${where}: name must be 1–100 letters, digits, '.', '_' or '-' (got ${JSON.stringify(s?.name)})`);
    const w = `saga "${name}" step "${s.name}"`;
    if (byName.has(s.name)) throw invalid(`${w}: step names must be unique`);
    if (typeof s.action !== 'function') throw invalid(`${w}: action must be a function`);
    checkTimeout(w, s.timeoutMs);
    const replyByType = replyMap<State>(w, s.replies);
    noteReplies(w, replyByType);
    let compensationReplyByType: Map<string, SagaReply<State>> = new Map();
    if (s.compensation !== undefined) {
      if (typeof s.compensation !== 'object' || s.compensation === null || typeof s.compensation.action !== 'function') throw invalid(`${w}: compensation needs an action function`);
      checkTimeout(`${w} compensation`, s.compensation.timeoutMs);
      compensationReplyByType = replyMap<State>(`${w} compensation`, s.compensation.replies);
      noteReplies(`${w} compensation`, compensationReplyByType);
    }
    const step: NormalizedStep<State> = Object.freeze({
      ...s,
      index,
      retryPolicy: retryPolicy(w, s.retry),
      compensationRetry: retryPolicy(`${w} compensation`, s.compensation?.retry),
      replyByType,
      compensationReplyByType,
    });
    byName.set(s.name, step);
    return step;
  });
  return Object.freeze({
    ...input,
    name,
    version,
    topic,
    steps,
    replyEvents: [...replyEvents.values()],
    step: (n: string) => byName.get(n),
  });
}

/** A persisted saga instance. Stores keep it as JSON; `revision` drives optimistic concurrency. */
export interface SagaInstance<State = unknown> {
  readonly saga: string;
  readonly key: string;
  /** Unique per instance (a new start after a purge gets a new id). */
  readonly id: string;
  readonly sagaVersion: number;
  readonly status: SagaStatus;
  readonly state: State;
  /** The step waiting for a reply (running) or being compensated (compensating, stuck); undefined when done. */
  readonly step: string | undefined;
  /** Attempt of the current action or compensation, 1-based. */
  readonly attempt: number;
  /** Steps whose actions took (or, after a timeout, may have taken) effect, in order. */
  readonly completed: readonly string[];
  /** Compensations still to run, next first (the current one included). */
  readonly toCompensate: readonly string[];
  /** The timer the instance waits on; any other timer is ignored. */
  readonly timer: string | undefined;
  readonly failure: SagaFailure | undefined;
  /** Set when stuck. */
  readonly error: SagaError | undefined;
  /** 1 after the first save; each save adds 1. */
  readonly revision: number;
  readonly startedAt: number;
  readonly updatedAt: number;
}

export type SagaTimelineKind =
  | 'started'
  | 'received'
  | 'sent'
  | 'timer-scheduled'
  | 'timer-fired'
  | 'timer-cancelled'
  | 'step-skipped'
  | 'step-completed'
  | 'step-failed'
  | 'step-retried'
  | 'compensation-completed'
  | 'compensation-failed'
  | 'compensation-retried'
  | 'completed'
  | 'compensated'
  | 'stuck'
  | 'resumed'
  | 'ignored';

/** One line of an instance's history. */
export interface SagaTimelineEntry {
  /** Epoch ms. */
  readonly at: number;
  readonly kind: SagaTimelineKind;
  readonly step?: string;
  readonly attempt?: number;
  /** Message type received or sent. */
  readonly type?: string;
  /** Id of the message received or sent. */
  readonly messageId?: string;
  readonly timerId?: string;
  readonly detail?: string;
  readonly error?: string;
}

/** A timer to schedule: the runtime sends it as a `herald.saga.timeout` message on the saga's topic at `deliverAt`. */
export interface SagaTimer {
  readonly id: string;
  readonly saga: string;
  readonly key: string;
  readonly instanceId: string;
  readonly step: string;
  readonly phase: 'action' | 'compensation';
  readonly attempt: number;
  /** 'timeout': no reply came in time; 'retry': the wait before a resend is over. */
  readonly purpose: 'timeout' | 'retry';
  readonly deliverAt: number;
}

/** A message to send, with its stable id. */
export interface SagaOutgoing extends SagaMessage {
  readonly id: string;
  readonly topic: string;
  readonly key: string;
}

export type SagaInput =
  /** A start or reply event. */
  | { readonly kind: 'event'; readonly type: string; readonly data: unknown; readonly messageId?: string; readonly envelope?: CloudEvent }
  /** A timer fired. */
  | { readonly kind: 'timer'; readonly timer: SagaTimer; readonly messageId?: string }
  /** An operator resumes a stuck instance: its failing compensation starts again at attempt 1. */
  | { readonly kind: 'resume'; readonly reason?: string };

export interface SagaDecision<State = unknown> {
  /** The instance to save (revision already incremented); undefined when nothing changed. */
  readonly instance: SagaInstance<State> | undefined;
  /** Revision the stored instance must have for the save to apply (0: none stored). */
  readonly expectedRevision: number;
  readonly outgoing: readonly SagaOutgoing[];
  readonly timers: readonly SagaTimer[];
  readonly cancelTimers: readonly string[];
  readonly timeline: readonly SagaTimelineEntry[];
}

export interface DecideContext {
  /** Epoch ms. */
  readonly now: number;
  /** A fresh instance id (called once, for a start). */
  readonly newId: () => string;
}

/**
 * The instance key an event belongs to, or undefined when it cannot be correlated (ignored).
 * Start event: `startedBy.key`; a reply: `correlate[type]`, else the definition's `keyField`,
 * else the envelope's partition key; a timer: its own key.
 */
export function sagaKeyOf(def: SagaDefinition, input: SagaInput & { kind: 'event' | 'timer' }): string | undefined {
  if (input.kind === 'timer') return input.timer.key;
  if (input.type === def.startedBy.event.type) return def.startedBy.key(input.data, input.envelope);
  const c = def.correlate?.[input.type];
  if (c) return c(input.data, input.envelope);
  const field = def.replyEvents.find((r) => r.event.type === input.type)?.event.keyField;
  if (field !== undefined && typeof input.data === 'object' && input.data !== null) {
    const v = (input.data as Record<string, unknown>)[field];
    if (v !== undefined && v !== null) return String(v);
  }
  return input.envelope?.partitionkey;
}

/** Timer id: `<instance>/<step>/<phase>/<attempt>`, plus `/retry` for the wait before a resend. */
export function sagaTimerId(instanceId: string, step: string, phase: 'action' | 'compensation', attempt: number, purpose: 'timeout' | 'retry'): string {
  return `${instanceId}/${step}/${phase}/${attempt}${purpose === 'retry' ? '/retry' : ''}`;
}

function retryDelay(p: SagaRetryPolicy, attempt: number): number {
  return Math.min(p.maxDelayMs, p.delayMs * p.multiplier ** Math.max(0, attempt - 1));
}

function asList(r: SagaActionResult): readonly SagaMessage[] {
  if (r === undefined || r === null) return [];
  return Array.isArray(r) ? (r as readonly SagaMessage[]) : [r as SagaMessage];
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

type Working<State> = { -readonly [K in Exclude<keyof SagaInstance<State>, 'completed' | 'toCompensate'>]: SagaInstance<State>[K] } & { completed: string[]; toCompensate: string[] };

/**
 * The pure transition: given the stored instance (or none), an input and the time, returns the
 * instance to save, the messages to send, the timers to schedule and cancel, and the timeline
 * entries. Never throws for user-code errors: a throwing forward action or update fails the step
 * (compensation), a throwing compensation leaves the instance stuck. Throws only when the
 * definition itself is misused (a stored step the definition no longer has).
 */
export function decideSaga<State>(def: SagaDefinition<State>, current: SagaInstance<State> | undefined, input: SagaInput, ctx: DecideContext): SagaDecision<State> {
  const { now } = ctx;
  const outgoing: SagaOutgoing[] = [];
  const timers: SagaTimer[] = [];
  const cancelTimers: string[] = [];
  const timeline: SagaTimelineEntry[] = [];
  const nothing = (detail?: string): SagaDecision<State> => ({
    instance: undefined,
    expectedRevision: current?.revision ?? 0,
    outgoing: [],
    timers: [],
    cancelTimers: [],
    timeline: current && detail !== undefined ? [{ at: now, kind: 'ignored', ...messageInfo(), detail }] : [],
  });
  function messageInfo(): Pick<SagaTimelineEntry, 'type' | 'messageId' | 'timerId'> {
    if (input.kind === 'event') return { type: input.type, ...(input.messageId !== undefined ? { messageId: input.messageId } : {}) };
    if (input.kind === 'timer') return { type: SAGA_TIMER_TYPE, timerId: input.timer.id };
    return {};
  }

  let inst: Working<State>;
  if (current === undefined) {
    if (input.kind !== 'event' || input.type !== def.startedBy.event.type) return nothing();
    const key = def.startedBy.key(input.data as never, input.envelope);
    inst = {
      saga: def.name,
      key,
      id: ctx.newId(),
      sagaVersion: def.version,
      status: 'running',
      state: undefined as State,
      step: undefined,
      attempt: 1,
      completed: [],
      toCompensate: [],
      timer: undefined,
      failure: undefined,
      error: undefined,
      revision: 0,
      startedAt: now,
      updatedAt: now,
    };
    timeline.push({ at: now, kind: 'started', ...messageInfo() });
    try {
      inst.state = def.startedBy.init(input.data as never);
    } catch (e) {
      // Nothing was done yet: there is nothing to compensate.
      inst.failure = { step: '(start)', reason: `init threw: ${errorText(e)}`, at: now };
      inst.status = 'compensated';
      timeline.push({ at: now, kind: 'compensated', error: errorText(e), detail: 'init threw; nothing to compensate' });
      return finish();
    }
    enterStep(0, 1);
    return finish();
  }

  inst = { ...current, completed: [...current.completed], toCompensate: [...current.toCompensate] };

  if (input.kind === 'resume') {
    if (inst.status !== 'stuck') return nothing(`resume ignored: the instance is ${inst.status}`);
    inst.status = 'compensating';
    inst.error = undefined;
    timeline.push({ at: now, kind: 'resumed', ...(inst.step !== undefined ? { step: inst.step } : {}), ...(input.reason !== undefined ? { detail: input.reason } : {}) });
    enterCompensation(1);
    return finish();
  }

  if (input.kind === 'timer') {
    const t = input.timer;
    if (t.instanceId !== inst.id) return nothing('timer of an earlier instance');
    if (t.id !== inst.timer) return nothing('timer no longer pending');
    inst.timer = undefined;
    timeline.push({ at: now, kind: 'timer-fired', step: t.step, attempt: t.attempt, timerId: t.id, detail: t.purpose });
    if (inst.status === 'running' && t.phase === 'action') {
      const step = stepNamed(t.step);
      if (t.purpose === 'retry') {
        enterStep(step.index, t.attempt);
        return finish();
      }
      if (inst.attempt < step.retryPolicy.maxAttempts) {
        retryLater('action', step, step.retryPolicy, `no reply within ${step.timeoutMs} ms`);
        return finish();
      }
      // The action may have taken effect: compensate it as well.
      failStep(step, `timed out: no reply within ${step.timeoutMs} ms after ${inst.attempt} attempt${inst.attempt === 1 ? '' : 's'}`, true);
      return finish();
    }
    if (inst.status === 'compensating' && t.phase === 'compensation') {
      const step = stepNamed(t.step);
      if (t.purpose === 'retry') {
        enterCompensation(t.attempt);
        return finish();
      }
      compensationFailed(step, `timed out: no reply within ${step.compensation?.timeoutMs} ms`);
      return finish();
    }
    return nothing(`timer for ${t.phase} while ${inst.status}`);
  }

  // A reply.
  if (inst.status === 'running' || inst.status === 'compensating') {
    const step = inst.step === undefined ? undefined : stepNamed(inst.step);
    const reply = step === undefined ? undefined : inst.status === 'running' ? step.replyByType.get(input.type) : step.compensationReplyByType.get(input.type);
    if (step === undefined || reply === undefined) {
      return nothing(input.type === def.startedBy.event.type ? 'the instance is already started' : `not a reply to ${inst.status === 'running' ? 'step' : 'the compensation of'} "${inst.step}"`);
    }
    timeline.push({ at: now, kind: 'received', step: step.name, attempt: inst.attempt, ...messageInfo(), detail: reply.outcome });
    if (inst.timer !== undefined) cancelTimer();
    if (reply.update) {
      try {
        inst.state = reply.update(inst.state, input.data);
      } catch (e) {
        if (inst.status === 'running') failStep(step, `update for "${input.type}" threw: ${errorText(e)}`, reply.outcome === 'success');
        else becomeStuck(step, `update for "${input.type}" threw: ${errorText(e)}`);
        return finish();
      }
    }
    if (inst.status === 'running') {
      if (reply.outcome === 'success') {
        inst.completed.push(step.name);
        timeline.push({ at: now, kind: 'step-completed', step: step.name, attempt: inst.attempt });
        enterStep(step.index + 1, 1);
      } else {
        failStep(step, reasonOf(reply, input.data), false);
      }
    } else if (reply.outcome === 'success') {
      compensationDone(step);
    } else {
      compensationFailed(step, reasonOf(reply, input.data));
    }
    return finish();
  }
  return nothing(input.type === def.startedBy.event.type ? `the instance is already ${inst.status}` : `the instance is ${inst.status}`);

  // --- helpers (hoisted) ---

  function reasonOf(reply: SagaReply<State>, data: unknown): string {
    if (!reply.reason) return reply.event.type;
    try {
      return reply.reason(data);
    } catch (e) {
      return `${reply.event.type} (reason threw: ${errorText(e)})`;
    }
  }

  function stepNamed(name: string): NormalizedStep<State> {
    const s = def.step(name);
    if (!s) throw invalid(`saga "${def.name}" instance "${inst.key}" is at step "${name}", which this definition (v${def.version}) does not have`);
    return s;
  }

  function finish(): SagaDecision<State> {
    inst.revision = (current?.revision ?? 0) + 1;
    inst.updatedAt = now;
    return { instance: Object.freeze(inst), expectedRevision: current?.revision ?? 0, outgoing, timers, cancelTimers, timeline };
  }

  function cancelTimer(): void {
    cancelTimers.push(inst.timer!);
    timeline.push({ at: now, kind: 'timer-cancelled', timerId: inst.timer! });
    inst.timer = undefined;
  }

  function emit(messages: readonly SagaMessage[], idPrefix: string, step: string | undefined): void {
    messages.forEach((m, n) => {
      const topic = m.topic ?? m.definition.topic;
      if (topic === undefined) throw invalid(`saga "${def.name}": message "${m.definition.type}" has no topic (define it with one or use send(…, { topic }))`);
      let key = m.key;
      if (key === undefined && m.definition.keyField !== undefined && typeof m.data === 'object' && m.data !== null) {
        const v = (m.data as Record<string, unknown>)[m.definition.keyField];
        if (v !== undefined && v !== null) key = String(v);
      }
      const id = `${idPrefix}:${n}`;
      outgoing.push({ definition: m.definition, data: m.data, topic, key: key ?? inst.key, id });
      timeline.push({ at: now, kind: 'sent', ...(step !== undefined ? { step } : {}), type: m.definition.type, messageId: id });
    });
  }

  function schedule(step: string, phase: 'action' | 'compensation', attempt: number, purpose: 'timeout' | 'retry', delayMs: number): void {
    const id = sagaTimerId(inst.id, step, phase, attempt, purpose);
    timers.push({ id, saga: def.name, key: inst.key, instanceId: inst.id, step, phase, attempt, purpose, deliverAt: now + delayMs });
    inst.timer = id;
    timeline.push({ at: now, kind: 'timer-scheduled', step, attempt, timerId: id, detail: `${purpose} at +${delayMs} ms` });
  }

  function actionCtx(attempt: number): SagaActionContext {
    return { key: inst.key, instanceId: inst.id, attempt };
  }

  function enterStep(index: number, attempt: number): void {
    for (let i = index; ; i++) {
      const step = def.steps[i];
      if (step === undefined) {
        inst.status = 'completed';
        inst.step = undefined;
        inst.attempt = 1;
        let extra: readonly SagaMessage[];
        try {
          extra = asList(def.onCompleted?.(inst.state));
        } catch (e) {
          extra = [];
          timeline.push({ at: now, kind: 'completed', error: `onCompleted threw: ${errorText(e)}` });
          return;
        }
        emit(extra, `${inst.id}:completed`, undefined);
        timeline.push({ at: now, kind: 'completed' });
        return;
      }
      const a = i === index ? attempt : 1;
      inst.status = 'running';
      inst.step = step.name;
      inst.attempt = a;
      let messages: readonly SagaMessage[];
      try {
        messages = asList(step.action(inst.state, actionCtx(a)));
        validateMessages(messages);
      } catch (e) {
        failStep(step, `action threw: ${errorText(e)}`, false);
        return;
      }
      if (messages.length === 0) {
        timeline.push({ at: now, kind: 'step-skipped', step: step.name });
        continue;
      }
      if (a > 1) timeline.push({ at: now, kind: 'step-retried', step: step.name, attempt: a });
      emit(messages, `${inst.id}:${step.name}:action:${a}`, step.name);
      if (step.replyByType.size === 0) {
        inst.completed.push(step.name);
        timeline.push({ at: now, kind: 'step-completed', step: step.name, attempt: a, detail: 'no reply expected' });
        continue;
      }
      if (step.timeoutMs) schedule(step.name, 'action', a, 'timeout', step.timeoutMs);
      return;
    }
  }

  function validateMessages(messages: readonly SagaMessage[]): void {
    for (const m of messages) {
      if (typeof m !== 'object' || m === null || typeof m.definition?.type !== 'string') throw new TypeError('an action must return send(definition, data) results');
      if ((m.topic ?? m.definition.topic) === undefined) throw new TypeError(`message "${m.definition.type}" has no topic`);
    }
  }

  function retryLater(phase: 'action' | 'compensation', step: NormalizedStep<State>, policy: SagaRetryPolicy, why: string): void {
    const delay = retryDelay(policy, inst.attempt);
    if (delay > 0) {
      schedule(step.name, phase, inst.attempt + 1, 'retry', delay);
      timeline.push({ at: now, kind: phase === 'action' ? 'step-retried' : 'compensation-retried', step: step.name, attempt: inst.attempt + 1, detail: `${why}; resend in ${delay} ms` });
      return;
    }
    if (phase === 'action') enterStep(step.index, inst.attempt + 1);
    else enterCompensation(inst.attempt + 1);
  }

  function failStep(step: NormalizedStep<State>, reason: string, compensateItself: boolean): void {
    if (inst.timer !== undefined) cancelTimer();
    inst.failure = { step: step.name, reason, at: now };
    timeline.push({ at: now, kind: 'step-failed', step: step.name, attempt: inst.attempt, detail: reason });
    const done = compensateItself ? [...inst.completed, step.name] : [...inst.completed];
    if (compensateItself && !inst.completed.includes(step.name)) inst.completed.push(step.name);
    inst.toCompensate = done.reverse().filter((n) => def.step(n)?.compensation !== undefined);
    enterCompensation(1);
  }

  function enterCompensation(attempt: number): void {
    for (;;) {
      const name = inst.toCompensate[0];
      if (name === undefined) {
        inst.status = 'compensated';
        inst.step = undefined;
        inst.attempt = 1;
        let extra: readonly SagaMessage[];
        try {
          extra = asList(def.onCompensated?.(inst.state, inst.failure));
        } catch (e) {
          timeline.push({ at: now, kind: 'compensated', error: `onCompensated threw: ${errorText(e)}` });
          return;
        }
        emit(extra, `${inst.id}:compensated`, undefined);
        timeline.push({ at: now, kind: 'compensated', ...(inst.failure ? { detail: `${inst.failure.step}: ${inst.failure.reason}` } : {}) });
        return;
      }
      const step = stepNamed(name);
      const comp = step.compensation!;
      inst.status = 'compensating';
      inst.step = name;
      inst.attempt = attempt;
      let messages: readonly SagaMessage[];
      try {
        messages = asList(comp.action(inst.state, actionCtx(attempt)));
        validateMessages(messages);
      } catch (e) {
        becomeStuck(step, `compensation action threw: ${errorText(e)}`);
        return;
      }
      if (attempt > 1) timeline.push({ at: now, kind: 'compensation-retried', step: name, attempt });
      emit(messages, `${inst.id}:${name}:compensation:${attempt}`, name);
      if (messages.length === 0 || step.compensationReplyByType.size === 0) {
        timeline.push({ at: now, kind: 'compensation-completed', step: name, attempt, ...(messages.length === 0 ? { detail: 'nothing to undo' } : { detail: 'no reply expected' }) });
        inst.toCompensate.shift();
        attempt = 1;
        continue;
      }
      if (comp.timeoutMs) schedule(name, 'compensation', attempt, 'timeout', comp.timeoutMs);
      return;
    }
  }

  function compensationDone(step: NormalizedStep<State>): void {
    timeline.push({ at: now, kind: 'compensation-completed', step: step.name, attempt: inst.attempt });
    inst.toCompensate.shift();
    enterCompensation(1);
  }

  function compensationFailed(step: NormalizedStep<State>, reason: string): void {
    timeline.push({ at: now, kind: 'compensation-failed', step: step.name, attempt: inst.attempt, detail: reason });
    if (inst.attempt < step.compensationRetry.maxAttempts) {
      retryLater('compensation', step, step.compensationRetry, reason);
      return;
    }
    becomeStuck(step, reason);
  }

  function becomeStuck(step: NormalizedStep<State>, message: string): void {
    if (inst.timer !== undefined) cancelTimer();
    inst.status = 'stuck';
    inst.step = step.name;
    inst.error = { step: step.name, message, attempts: inst.attempt, at: now };
    timeline.push({ at: now, kind: 'stuck', step: step.name, attempt: inst.attempt, error: message });
  }
}
