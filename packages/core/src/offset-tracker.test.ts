import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OffsetTracker } from './offset-tracker.ts';

test('watermark moves only over a contiguous run of acked offsets', () => {
  const t = new OffsetTracker(-1);
  for (const o of [0, 1, 2, 5, 7]) t.track(o);
  assert.equal(t.ack(1), false);
  assert.equal(t.watermark, -1);
  assert.equal(t.ack(0), true);
  assert.equal(t.watermark, 1);
  t.ack(5);
  assert.equal(t.watermark, 1, 'offset 2 still pending holds the watermark');
  t.ack(2);
  assert.equal(t.watermark, 5);
  assert.equal(t.pending, 1);
  t.ack(7);
  assert.equal(t.watermark, 7);
  assert.equal(t.dirty, true);
  t.markCommitted(7);
  assert.equal(t.dirty, false);
});

test('tracking out of order is a typed error; unknown and repeated acks are ignored', () => {
  const t = new OffsetTracker(10);
  t.track(11);
  assert.throws(() => t.track(11), { code: 'HERALD_ERR_INVALID_ARGUMENT' });
  assert.equal(t.ack(99), false);
  assert.equal(t.ack(11), true);
  assert.equal(t.ack(11), false);
});

test('uncommitted counts delivered messages above the committed position, whatever the gaps', () => {
  const t = new OffsetTracker(-1);
  for (const o of [10, 20, 30, 40]) t.track(o);
  assert.equal(t.uncommitted, 4);
  t.ack(10);
  t.ack(20);
  assert.equal(t.uncommitted, 4, 'done but not committed still counts');
  t.markCommitted(t.watermark);
  assert.equal(t.uncommitted, 2);
  t.ack(40);
  assert.equal(t.uncommitted, 2, '40 is done but 30 holds the watermark');
  t.ack(30);
  t.markCommitted(t.watermark);
  assert.equal(t.uncommitted, 0);
});
