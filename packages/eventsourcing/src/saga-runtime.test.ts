// The saga runtime's transaction path, driven through runtime.handle() (the path a delivery
// takes) on MemoryUnitOfWork: what one message commits (instance, timeline, outbox, timers),
// inbox deduplication, revision conflicts decided again, malformed timers, resume.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { createEnvelope, createMemoryTransport, defineCommand, defineEvent, isHeraldError, MemoryDeadLetterStore, MemoryUnitOfWork, type StandardSchemaV1 } from '@herald/core';
import { defineSaga, onFailure, onSuccess, SAGA_TIMER_TYPE, send } from './saga.ts';
import { MemorySagaStore } from './saga-memory-store.ts';
import { createSagaRuntime } from './saga-runtime.ts';
import { InstantClock } from './test-fixtures.ts';

const obj: StandardSchemaV1<unknown, { id: string }> = {
  '~standard': { version: 1, vendor: 'test', validate: (v) => (typeof (v as { id?: unknown })?.id === 'string' ? { value: v as { id: string } } : { issues: [{ message: 'id must be a string' }] }) },
};
const Started = defineEvent('job.started', obj, { topic: 'jobs', keyField: 'id' });
const DoWork = defineCommand('job.work', obj, { topic: 'work', keyField: 'id' });
const WorkDone = defineEvent('job.work-done', obj, { topic: 'work', keyField: 'id' });
const WorkFailed = defineEvent('job.work-failed', obj, { topic: 'work', keyField: 'id' });
const Undo = defineCommand('job.undo', obj, { topic: 'work', keyField: 'id' });
const Undone = defineEvent('job.undone', obj, { topic: 'work', keyField: 'id' });
const UndoRefused = defineEvent('job.undo-refused', obj, { topic: 'work', keyField: 'id' });
const Finish = defineCommand('job.finish', obj, { topic: 'jobs', keyField: 'id' });

const job = defineSaga<{ id: string }, { id: string }>({
  name: 'job',
  startedBy: { event: Started, key: (d) => d.id, init: (d) => ({ id: d.id }) },
  steps: [
    { name: 'first', action: (s) => send(DoWork, { id: s.id }), replies: [onSuccess(WorkDone)], compensation: { action: (s) => send(Undo, { id: s.id }), replies: [onSuccess(Undone), onFailure(UndoRefused)] }, timeoutMs: 1000 },
    { name: 'second', action: (s) => send(DoWork, { id: s.id }), replies: [onSuccess(WorkDone), onFailure(WorkFailed)], timeoutMs: 1000 },
  ],
  onCompleted: (s) => send(Finish, { id: s.id }),
});

function setup() {
  const clock = new InstantClock();
  const uow = new MemoryUnitOfWork({ clock });
  const store = new MemorySagaStore();
  let n = 0;
  const runtime = createSagaRuntime({ sagas: [job], store, unitOfWork: uow, transport: createMemoryTransport({ clock }), deadLetters: new MemoryDeadLetterStore(), source: 'jobs-saga', clock, newId: () => `i${++n}` });
  let m = 0;
  const env = (type: string, id: string, extra: Record<string, unknown> = {}) => createEnvelope({ type, source: 'worker', id: `m-${++m}`, data: { id }, partitionkey: id, ...extra });
  const outbox = async () => {
    const rows = [];
    for (let p = 0; p < uow.partitions; p++) rows.push(...(await uow.pending(p, 1000)));
    return rows.sort((a, b) => Number(a.id) - Number(b.id));
  };
  return { clock, uow, store, runtime, env, outbox };
}

describe('saga runtime', () => {
  it('commits the instance, its timeline, the messages (outbox) and the timer together, with causation and stable ids', async () => {
    const { uow, store, runtime, env, outbox } = setup();
    const start = env(Started.type, 'j1', { correlationid: 'corr-1' });
    const r = await runtime.handle('job', start);
    assert.equal(r.duplicate, false);
    assert.equal(r.instance?.status, 'running');
    const rows = await outbox();
    assert.equal(rows.length, 1);
    const sent = rows[0]!;
    assert.equal(sent.topic, 'work');
    assert.equal(sent.message.key, 'j1');
    assert.equal(sent.message.envelope.id, 'i1:first:action:1:0');
    assert.equal(sent.message.envelope.type, DoWork.type);
    assert.equal(sent.message.envelope.source, 'jobs-saga');
    assert.equal(sent.message.envelope.causationid, start.id);
    assert.equal(sent.message.envelope.correlationid, 'corr-1');
    const due = await uow.due(Number.MAX_SAFE_INTEGER, 10);
    assert.deepEqual(due.map((d) => [d.id, d.topic, d.message.key, d.message.envelope.type, d.message.envelope.id]), [['i1/first/action/1', 'saga.job', 'j1', SAGA_TIMER_TYPE, 'i1/first/action/1']]);
    assert.deepEqual((await store.timeline('job', 'j1')).items.map((e) => e.kind), ['started', 'sent', 'timer-scheduled']);
  });

  it('a redelivered message is recognised by the inbox and has no second effect', async () => {
    const { clock, uow, store, runtime, env, outbox } = setup();
    await runtime.handle('job', env(Started.type, 'j1'));
    const done = env(WorkDone.type, 'j1');
    // The step takes 40 ms on the runtime's clock, from the instance's read on: its inbox record keeps that duration.
    const get = store.get.bind(store);
    store.get = async (...args: Parameters<typeof get>) => {
      clock.time += 40;
      return get(...args);
    };
    const startedAt = clock.time;
    await runtime.handle('job', done);
    assert.deepEqual(await uow.inboxRecord({ group: 'saga.job', handler: `job:${WorkDone.type}`, source: done.source, id: done.id }), { handledAt: startedAt + 40, durationMs: 40 });
    const again = await runtime.handle('job', done);
    assert.equal(again.duplicate, true);
    const i = (await store.get('job', 'j1'))!;
    assert.equal(i.step, 'second');
    assert.equal(i.revision, 2);
    assert.equal((await outbox()).length, 2, 'one DoWork per step, nothing resent');
    assert.equal(runtime.stats().duplicates, 1);
  });

  it('two messages of one instance handled at once: the second decides again on the new revision', async () => {
    const { uow, store, runtime, env } = setup();
    await runtime.handle('job', env(Started.type, 'j1'));
    const [timer] = await uow.due(Number.MAX_SAFE_INTEGER, 1);
    // The reply and the reply's timeout race: both read revision 1.
    const results = await Promise.all([runtime.handle('job', env(WorkDone.type, 'j1')), runtime.handle('job', timer!.message.envelope)]);
    assert.ok(results.every((r) => !r.duplicate));
    assert.equal(runtime.stats().conflicts, 1, 'one save met a newer revision');
    const i = (await store.get('job', 'j1'))!;
    assert.equal(i.status, 'running');
    assert.equal(i.step, 'second', 'the reply won; the timer was then found stale and ignored');
    assert.ok((await store.timeline('job', 'j1')).items.some((e) => e.kind === 'ignored' && e.detail === 'timer no longer pending'));
  });

  it('a timer message whose data is not a timer of this saga is a permanent error', async () => {
    const { runtime } = setup();
    await assert.rejects(runtime.handle('job', createEnvelope({ type: SAGA_TIMER_TYPE, source: 'x', id: 't1', data: { nope: true }, partitionkey: 'j1' })), (e) => isHeraldError(e, 'HERALD_ERR_PERMANENT'));
  });

  it('messages that match no instance are acked and counted as ignored', async () => {
    const { store, runtime, env } = setup();
    const r = await runtime.handle('job', env(WorkDone.type, 'nobody'));
    assert.equal(r.instance, undefined);
    assert.equal(runtime.stats().ignored, 1);
    assert.deepEqual((await store.list()).items, []);
  });

  it('resume sends a stuck compensation again; an unknown instance is HERALD_ERR_NOT_FOUND', async () => {
    const { store, runtime, env, outbox } = setup();
    await runtime.handle('job', env(Started.type, 'j1'));
    await runtime.handle('job', env(WorkDone.type, 'j1'));
    await runtime.handle('job', env(WorkFailed.type, 'j1'));
    await runtime.handle('job', env(UndoRefused.type, 'j1'));
    const stuck = (await store.get('job', 'j1'))!;
    assert.equal(stuck.status, 'stuck');
    assert.equal(runtime.stats().stuck, 1);
    const before = (await outbox()).length;
    const resumed = await runtime.resume('job', 'j1', 'airline back online');
    assert.equal(resumed.status, 'compensating');
    const rows = await outbox();
    assert.equal(rows.length, before + 1);
    assert.equal(rows.at(-1)!.message.envelope.type, Undo.type);
    assert.ok((await store.timeline('job', 'j1')).items.some((e) => e.kind === 'resumed' && e.detail === 'airline back online'));
    await assert.rejects(runtime.resume('job', 'nobody'), (e) => isHeraldError(e, 'HERALD_ERR_NOT_FOUND'));
  });

  it('refuses a runtime without sagas, or with the same saga twice', () => {
    const base = { store: new MemorySagaStore(), unitOfWork: new MemoryUnitOfWork(), transport: createMemoryTransport(), deadLetters: new MemoryDeadLetterStore(), source: 's' };
    assert.throws(() => createSagaRuntime({ ...base, sagas: [] }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    assert.throws(() => createSagaRuntime({ ...base, sagas: [job, job] }), (e) => isHeraldError(e, 'HERALD_ERR_DUPLICATE_DEFINITION'));
  });
});
