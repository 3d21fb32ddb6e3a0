import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { MANUAL_CLOCK_EPOCH, ManualClock } from './manual-clock.ts';

describe('ManualClock', () => {
  it('starts where told and stands still until advanced', async () => {
    const c = new ManualClock();
    assert.equal(c.now(), MANUAL_CLOCK_EPOCH);
    assert.equal(c.monotonic(), 0);
    const d = new ManualClock({ now: new Date('2030-05-06T07:08:09.010Z'), monotonic: 500 });
    assert.equal(d.now(), Date.parse('2030-05-06T07:08:09.010Z'));
    assert.equal(d.monotonic(), 500);
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(d.now(), Date.parse('2030-05-06T07:08:09.010Z'));
    assert.equal(await d.advance(250), 0);
    assert.equal(d.now(), Date.parse('2030-05-06T07:08:09.260Z'));
    assert.equal(d.monotonic(), 750);
  });

  it('fires timers at their due time, in due order, ties in the order set', async () => {
    const c = new ManualClock();
    const log: string[] = [];
    c.setTimer(() => log.push(`b@${c.monotonic()}`), 20);
    c.setTimer(() => log.push(`a@${c.monotonic()}`), 10);
    c.setTimer(() => log.push(`c1@${c.monotonic()}`), 30);
    c.setTimer(() => log.push(`c2@${c.monotonic()}`), 30);
    assert.equal(c.pendingTimers(), 4);
    assert.equal(c.nextTimerAt(), 10);
    assert.equal(await c.advance(9), 0);
    assert.deepEqual(log, []);
    assert.equal(await c.advance(1), 1);
    assert.deepEqual(log, ['a@10']);
    assert.equal(await c.advance(100), 3);
    assert.deepEqual(log, ['a@10', 'b@20', 'c1@30', 'c2@30']);
    assert.equal(c.monotonic(), 110);
    assert.equal(c.pendingTimers(), 0);
  });

  it('treats negative and NaN delays as 0 and fires them on advance(0)', async () => {
    const c = new ManualClock();
    let n = 0;
    c.setTimer(() => n++, -5);
    c.setTimer(() => n++, Number.NaN);
    c.setTimer(() => n++, 0);
    assert.equal(n, 0, 'never fires synchronously');
    assert.equal(await c.advance(0), 3);
    assert.equal(n, 3);
  });

  it('cancel removes a timer and is idempotent', async () => {
    const c = new ManualClock();
    let fired = false;
    const h = c.setTimer(() => (fired = true), 10);
    h.cancel();
    h.cancel();
    assert.equal(c.pendingTimers(), 0);
    await c.advance(100);
    assert.equal(fired, false);
    // cancelling after firing is a no-op too
    const h2 = c.setTimer(() => {}, 1);
    await c.advance(1);
    h2.cancel();
    assert.equal(c.pendingTimers(), 0);
  });

  it('fires timers set by timers and by awaited sleeps within the same advance', async () => {
    const c = new ManualClock();
    const at: number[] = [];
    const loop = (async () => {
      for (let i = 0; i < 5; i++) {
        await c.sleep(10);
        at.push(c.monotonic());
      }
    })();
    c.setTimer(() => c.setTimer(() => at.push(-c.monotonic()), 5), 20);
    await c.advance(50);
    await loop;
    assert.deepEqual(at, [10, 20, -25, 30, 40, 50]);
  });

  it('sleep rejects with the signal reason when aborted, before or during', async () => {
    const c = new ManualClock();
    const ac = new AbortController();
    const p = c.sleep(100, ac.signal);
    ac.abort(new Error('stop'));
    await assert.rejects(p, /stop/);
    assert.equal(c.pendingTimers(), 0, 'the aborted sleep leaves no timer behind');
    await assert.rejects(c.sleep(1, ac.signal), /stop/);
  });

  it('advanceSync fires plain callbacks without running continuations', () => {
    const c = new ManualClock();
    const log: number[] = [];
    c.setTimer(() => log.push(c.monotonic()), 5);
    c.setTimer(() => c.setTimer(() => log.push(c.monotonic()), 1), 6);
    assert.equal(c.advanceSync(10), 3);
    assert.deepEqual(log, [5, 7]);
    assert.equal(c.monotonic(), 10);
  });

  it('runNext jumps to the next timer; runAll drains and stops on a runaway periodic timer', async () => {
    const c = new ManualClock();
    const log: number[] = [];
    c.setTimer(() => log.push(c.monotonic()), 40);
    c.setTimer(() => log.push(c.monotonic()), 15);
    assert.equal(await c.runNext(), true);
    assert.deepEqual(log, [15]);
    assert.equal(c.monotonic(), 15);
    assert.equal(await c.runAll(), 1);
    assert.deepEqual(log, [15, 40]);
    assert.equal(await c.runNext(), false);

    const tick = (): void => void c.setTimer(tick, 100);
    tick();
    await assert.rejects(c.runAll({ maxTimers: 50 }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /periodic/.test(e.message));
    assert.equal(c.monotonic(), 40 + 50 * 100);
  });

  it('a throwing timer stops advance at its due time and leaves later timers pending', async () => {
    const c = new ManualClock();
    let later = false;
    c.setTimer(() => {
      throw new Error('boom');
    }, 10);
    c.setTimer(() => (later = true), 20);
    await assert.rejects(c.advance(100), /boom/);
    assert.equal(c.monotonic(), 10);
    assert.equal(later, false);
    assert.equal(c.pendingTimers(), 1);
    await c.advance(10);
    assert.equal(later, true);
  });

  it('setWallTime steps now() alone; monotonic and timers are unaffected', async () => {
    const c = new ManualClock({ now: 1_000_000 });
    let fired = 0;
    c.setTimer(() => fired++, 50);
    c.setWallTime(5);
    assert.equal(c.now(), 5);
    assert.equal(c.monotonic(), 0);
    assert.equal(fired, 0);
    await c.advance(50);
    assert.equal(fired, 1);
    assert.equal(c.now(), 55);
  });

  it('refuses bad arguments and overlapping advances with HERALD_ERR_INVALID_ARGUMENT', async () => {
    const c = new ManualClock();
    await assert.rejects(c.advance(-1), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    await assert.rejects(c.advance(Number.POSITIVE_INFINITY), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    assert.throws(() => new ManualClock({ now: Number.NaN }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    const first = c.advance(10);
    await assert.rejects(c.advance(10), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    await first;
    assert.equal(c.monotonic(), 10);
  });
});
