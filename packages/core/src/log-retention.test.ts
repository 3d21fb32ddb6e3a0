import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planRetention, retentionDue } from './log-retention.ts';

test('retentionDue: by age always; by count only above the cap', () => {
  assert.equal(retentionDue(0, 10, true, undefined), true);
  assert.equal(retentionDue(0, 10, false, undefined), false);
  assert.equal(retentionDue(0, 10, false, 10), false);
  assert.equal(retentionDue(0, 11, false, 10), true);
});

test('planRetention by age stops at the slowest group and at the first young record', () => {
  const groups = [
    { grp: 'fast', committed: 8 },
    { grp: 'slow', committed: 4 },
  ];
  assert.deepEqual(planRetention({ first: 0, next: 10, young: 7, cap: undefined, groups }), { upTo: 4, losses: [] });
  assert.deepEqual(planRetention({ first: 0, next: 10, young: 3, cap: undefined, groups }), { upTo: 2, losses: [] });
  assert.deepEqual(planRetention({ first: 0, next: 10, young: 10, cap: undefined, groups: [] }), { upTo: 9, losses: [] }, 'no group holds anything back');
});

test('planRetention by count removes past the slowest group and charges each group what it had not committed', () => {
  const groups = [
    { grp: 'fast', committed: 8 },
    { grp: 'slow', committed: 2 },
    { grp: 'new', committed: -1 },
  ];
  // 10 records (0–9), cap 4: keep 6–9, delete ≤ 5.
  assert.deepEqual(planRetention({ first: 0, next: 10, young: undefined, cap: 4, groups }), {
    upTo: 5,
    losses: [
      { grp: 'slow', after: 2, upTo: 5 },
      { grp: 'new', after: -1, upTo: 5 },
    ],
  });
  // Records before `first` are already gone (an earlier trim charged them): losses start at first − 1.
  assert.deepEqual(planRetention({ first: 3, next: 10, young: undefined, cap: 4, groups }).losses, [
    { grp: 'slow', after: 2, upTo: 5 },
    { grp: 'new', after: 2, upTo: 5 },
  ]);
  assert.deepEqual(planRetention({ first: 6, next: 10, young: undefined, cap: 4, groups }), { upTo: 5, losses: [] }, 'within the cap: nothing');
});
