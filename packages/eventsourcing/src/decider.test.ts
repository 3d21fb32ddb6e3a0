import assert, { AssertionError } from 'node:assert/strict';
import { describe, it } from 'node:test';
import { HeraldError } from '@herald/core';
import { DeciderSpecification } from './decider-specification.ts';
import { CartClosedError, cartDecider } from './test-fixtures.ts';

const given = DeciderSpecification.for(cartDecider);
const opened = { type: 'CartOpened', data: { cartId: 'c1' } } as const;
const added = { type: 'ItemAdded', data: { sku: 'a', qty: 2 } } as const;

describe('DeciderSpecification', () => {
  it('given/when/then passes when the decided events match', () => {
    given([opened]).when({ type: 'Add', sku: 'a', qty: 2 }).then([added]);
    given([]).when({ type: 'Add', sku: 'a', qty: 2 }).then([{ type: 'CartOpened', data: { cartId: 'auto' } }, added]);
    given([opened, added]).when({ type: 'CheckOut' }).then({ type: 'CartCheckedOut', data: { total: 2 } });
    given([opened]).when({ type: 'Open', cartId: 'c1' }).thenNothingHappened();
    given([opened, added, added]).when({ type: 'Add', sku: 'b', qty: 1 }).thenState((s) => assert.deepEqual(s.items, { a: 4, b: 1 }));
  });

  it('then fails with an AssertionError showing what was decided', () => {
    assert.throws(() => given([opened]).when({ type: 'Add', sku: 'a', qty: 2 }).then([{ type: 'ItemAdded', data: { sku: 'a', qty: 3 } }]), AssertionError);
    assert.throws(() => given([opened]).when({ type: 'Add', sku: 'a', qty: 2 }).thenNothingHappened(), AssertionError);
  });

  it('thenThrows takes an error class, a Herald code, a predicate or nothing', () => {
    const closed = [opened, { type: 'CartCheckedOut', data: { total: 0 } } as const];
    const e = given(closed).when({ type: 'Add', sku: 'a', qty: 1 }).thenThrows(CartClosedError);
    assert.ok(e instanceof CartClosedError);
    given([opened]).when({ type: 'Add', sku: 'a', qty: 0 }).thenThrows(RangeError);
    given([opened]).when({ type: 'Add', sku: 'a', qty: 0 }).thenThrows((err) => (err as Error).message.includes('positive'));
    given([]).when({ type: 'CheckOut' }).thenThrows();
    assert.throws(() => given(closed).when({ type: 'Add', sku: 'a', qty: 1 }).thenThrows(RangeError), AssertionError, 'the wrong class fails');
    assert.throws(() => given([opened]).when({ type: 'Add', sku: 'a', qty: 1 }).thenThrows(), AssertionError, 'no error fails');
    const heraldDecider = { ...cartDecider, decide: () => { throw new HeraldError('HERALD_ERR_PERMANENT', 'no'); } };
    DeciderSpecification.for(heraldDecider)([]).when({ type: 'Noop' }).thenThrows('HERALD_ERR_PERMANENT');
    assert.throws(() => DeciderSpecification.for(heraldDecider)([]).when({ type: 'Noop' }).thenThrows('HERALD_ERR_TRANSIENT'), AssertionError);
  });
});
