// SQLite saga store beyond the contract: a row that cannot be read back is a typed error that
// names it and leaves the other instances readable; the schema component is recorded.
import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import type { SagaInstance } from '@herald/eventsourcing';
import { SAGA_COMPONENT, SAGA_SCHEMA_VERSION } from './saga-store-schema.ts';
import { createSqliteSagaStore } from './saga-store.ts';
import { tempDbPath } from './test-helpers.ts';
import { createSqliteUnitOfWork } from './unit-of-work.ts';

const { path, cleanup } = tempDbPath();
const uow = createSqliteUnitOfWork({ path });
const store = createSqliteSagaStore({ path });
after(async () => {
  store.close();
  await uow.close();
  cleanup();
});

const instance = (key: string): SagaInstance => ({
  saga: 'checkout', key, id: `id-${key}`, sagaVersion: 1, status: 'running', state: { key }, step: 'payment', attempt: 1,
  completed: [], toCompensate: [], timer: undefined, failure: undefined, error: undefined, revision: 1, startedAt: 1, updatedAt: 1,
});

describe('SqliteSagaStore', () => {
  it('records its schema component in herald_meta', () => {
    assert.equal(store.database.schemaVersion(SAGA_COMPONENT), SAGA_SCHEMA_VERSION);
  });

  it('a corrupt instance row is HERALD_ERR_CORRUPT_RECORD naming it; other instances stay readable', async () => {
    await uow.withTransaction(async (tx) => {
      await store.save(tx, instance('good'), 0);
      await store.save(tx, instance('bad'), 0);
      await store.appendTimeline(tx, 'checkout', 'bad', 'id-bad', [{ at: 1, kind: 'started' }]);
    });
    store.database.db.prepare("UPDATE herald_sagas SET body = '{not json' WHERE key = 'bad'").run();
    store.database.db.prepare("UPDATE herald_saga_timeline SET entry = 'nope' WHERE key = 'bad'").run();
    await assert.rejects(store.get('checkout', 'bad'), (e) => isHeraldError(e, 'HERALD_ERR_CORRUPT_RECORD') && /instance "bad"/.test((e as Error).message));
    await assert.rejects(store.timeline('checkout', 'bad'), (e) => isHeraldError(e, 'HERALD_ERR_CORRUPT_RECORD'));
    assert.equal((await store.get('checkout', 'good'))?.key, 'good');
    assert.deepEqual(await store.countByStatus(), [{ saga: 'checkout', status: 'running', count: 2 }]);
  });
});
