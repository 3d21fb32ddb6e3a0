import assert, { AssertionError } from 'node:assert/strict';
import { describe, it } from 'node:test';
import { defineCommand, defineEvent, isHeraldError, type StandardSchemaV1 } from '@herald/core';
import { decideSaga, defineSaga, onFailure, onSuccess, send, type SagaInstance } from './saga.ts';
import { event, resume, SAGA_SPEC_EPOCH, SagaSpecification, timeout } from './saga-specification.ts';

// A trip saga: flight → hotel → car, each undoable. No schema checks here (the runtime tests validate).
function any<T>(): StandardSchemaV1<T, T> {
  return { '~standard': { version: 1, vendor: 'test', validate: (value) => ({ value: value as T }) } };
}
type Ref = { tripId: string };
const TripRequested = defineEvent('trip.requested', any<{ tripId: string; car: boolean }>(), { topic: 'trips', keyField: 'tripId' });
const BookFlight = defineCommand('flight.book', any<Ref>(), { topic: 'flights', keyField: 'tripId' });
const FlightBooked = defineEvent('flight.booked', any<Ref & { seat: string }>(), { topic: 'flights', keyField: 'tripId' });
const FlightFull = defineEvent('flight.full', any<Ref>(), { topic: 'flights', keyField: 'tripId' });
const CancelFlight = defineCommand('flight.cancel', any<Ref>(), { topic: 'flights', keyField: 'tripId' });
const FlightCancelled = defineEvent('flight.cancelled', any<Ref>(), { topic: 'flights', keyField: 'tripId' });
const FlightCancelRefused = defineEvent('flight.cancel-refused', any<Ref & { why: string }>(), { topic: 'flights', keyField: 'tripId' });
const BookHotel = defineCommand('hotel.book', any<Ref>(), { topic: 'hotels', keyField: 'tripId' });
const HotelBooked = defineEvent('hotel.booked', any<Ref>(), { topic: 'hotels', keyField: 'tripId' });
const HotelFull = defineEvent('hotel.full', any<Ref & { why: string }>(), { topic: 'hotels', keyField: 'tripId' });
const CancelHotel = defineCommand('hotel.cancel', any<Ref>(), { topic: 'hotels', keyField: 'tripId' });
const BookCar = defineCommand('car.book', any<Ref>(), { topic: 'cars', keyField: 'tripId' });
const CarBooked = defineEvent('car.booked', any<Ref>(), { topic: 'cars', keyField: 'tripId' });
const CarUnavailable = defineEvent('car.unavailable', any<Ref>(), { topic: 'cars', keyField: 'tripId' });
const TripConfirmed = defineEvent('trip.confirmed', any<Ref>(), { topic: 'trips', keyField: 'tripId' });
const TripAbandoned = defineEvent('trip.abandoned', any<Ref & { reason: string }>(), { topic: 'trips', keyField: 'tripId' });

interface Trip {
  readonly tripId: string;
  readonly car: boolean;
  readonly seat?: string;
}

const trip = defineSaga<Trip, { tripId: string; car: boolean }>({
  name: 'trip',
  startedBy: { event: TripRequested, key: (d) => d.tripId, init: (d) => ({ tripId: d.tripId, car: d.car }) },
  steps: [
    {
      name: 'flight',
      action: (s) => send(BookFlight, { tripId: s.tripId }),
      replies: [onSuccess(FlightBooked, (s: Trip, d) => ({ ...s, seat: d.seat })), onFailure(FlightFull)],
      compensation: {
        action: (s) => send(CancelFlight, { tripId: s.tripId }),
        replies: [onSuccess(FlightCancelled), onFailure(FlightCancelRefused, { reason: (d) => d.why })],
        timeoutMs: 1000,
        retry: { maxAttempts: 2 },
      },
      timeoutMs: 5000,
      retry: { maxAttempts: 2, delayMs: 100 },
    },
    {
      name: 'hotel',
      action: (s) => send(BookHotel, { tripId: s.tripId }),
      replies: [onSuccess(HotelBooked), onFailure(HotelFull, { reason: (d) => d.why })],
      compensation: { action: (s) => send(CancelHotel, { tripId: s.tripId }) },
      timeoutMs: 5000,
    },
    {
      name: 'car',
      action: (s) => (s.car ? send(BookCar, { tripId: s.tripId }) : undefined),
      replies: [onSuccess(CarBooked), onFailure(CarUnavailable)],
    },
  ],
  onCompleted: (s) => send(TripConfirmed, { tripId: s.tripId }),
  onCompensated: (s, f) => send(TripAbandoned, { tripId: s.tripId, reason: f ? `${f.step}: ${f.reason}` : 'unknown' }),
});

const given = SagaSpecification.for(trip);
const requested = event(TripRequested, { tripId: 't1', car: true });
const booked = event(FlightBooked, { tripId: 't1', seat: '12A' });
const ref = { tripId: 't1' };

describe('saga definition', () => {
  const base = { name: 's', startedBy: { event: TripRequested, key: (d: { tripId: string }) => d.tripId, init: () => ({}) } };
  const bad: Array<[string, () => unknown, RegExp]> = [
    ['a bad name', () => defineSaga({ ...base, name: 'has space', steps: [{ name: 'a', action: () => undefined }] }), /saga name/],
    ['no steps', () => defineSaga({ ...base, steps: [] }), /non-empty/],
    ['duplicate step names', () => defineSaga({ ...base, steps: [{ name: 'a', action: () => undefined }, { name: 'a', action: () => undefined }] }), /unique/],
    ['a negative timeout', () => defineSaga({ ...base, steps: [{ name: 'a', action: () => undefined, timeoutMs: -1 }] }), /timeoutMs/],
    ['maxAttempts 0', () => defineSaga({ ...base, steps: [{ name: 'a', action: () => undefined, retry: { maxAttempts: 0 } }] }), /maxAttempts/],
    ['a reply listed twice', () => defineSaga({ ...base, steps: [{ name: 'a', action: () => undefined, replies: [onSuccess(FlightBooked), onFailure(FlightBooked)] }] }), /twice/],
    ['the start event as a reply', () => defineSaga({ ...base, steps: [{ name: 'a', action: () => undefined, replies: [onSuccess(TripRequested)] }] }), /start event/],
  ];
  for (const [what, fn, message] of bad) {
    it(`refuses ${what} with HERALD_ERR_INVALID_ARGUMENT`, () => {
      assert.throws(fn, (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && message.test((e as Error).message));
    });
  }

  it('lists every reply event once, with its topic', () => {
    assert.deepEqual(
      trip.replyEvents.map((r) => `${r.topic}/${r.event.type}`),
      ['flights/flight.booked', 'flights/flight.full', 'flights/flight.cancelled', 'flights/flight.cancel-refused', 'hotels/hotel.booked', 'hotels/hotel.full', 'cars/car.booked', 'cars/car.unavailable'],
    );
  });
});

describe('saga transitions (SagaSpecification)', () => {
  it('a start sends the first action and arms its timeout', () =>
    given([]).when(requested).then({ status: 'running', sent: [send(BookFlight, ref, { topic: 'flights', key: 't1' })], timerPending: true }));

  it('success replies walk the steps and completion sends onCompleted', () => {
    given([requested, booked]).when(event(HotelBooked, ref)).then({ status: 'running', sent: [send(BookCar, ref)] });
    given([requested, booked, event(HotelBooked, ref)])
      .when(event(CarBooked, ref))
      .then({ status: 'completed', sent: [send(TripConfirmed, ref)], state: { tripId: 't1', car: true, seat: '12A' }, timerPending: false });
  });

  it('an action returning nothing skips its step', () =>
    given([event(TripRequested, { tripId: 't1', car: false }), booked])
      .when(event(HotelBooked, ref))
      .then({
        status: 'completed',
        sent: [send(TripConfirmed, ref)],
        check: (_i, _s, timeline) => assert.ok(timeline.some((t) => t.kind === 'step-skipped' && t.step === 'car')),
      }));

  it('a failure reply compensates the completed steps in reverse order, not the failed one', () => {
    given([requested, booked]).when(event(HotelFull, { tripId: 't1', why: 'no rooms' })).then({ status: 'compensating', sent: [send(CancelFlight, ref)] });
    given([requested, booked, event(HotelFull, { tripId: 't1', why: 'no rooms' })])
      .when(event(FlightCancelled, ref))
      .then({
        status: 'compensated',
        sent: [send(TripAbandoned, { tripId: 't1', reason: 'hotel: no rooms' })],
        check: (i) => assert.deepEqual(i?.failure, { step: 'hotel', reason: 'no rooms', at: SAGA_SPEC_EPOCH }),
      });
  });

  it('a compensation without replies is done once sent; the next one follows at once', () =>
    given([requested, booked, event(HotelBooked, ref)])
      .when(event(CarUnavailable, ref))
      .then({ status: 'compensating', sent: [send(CancelHotel, ref), send(CancelFlight, ref)], check: (i) => assert.deepEqual(i?.toCompensate, ['flight']) }));

  it('a failure of the first step compensates nothing', () =>
    given([requested]).when(event(FlightFull, ref)).then({ status: 'compensated', sent: [send(TripAbandoned, { tripId: 't1', reason: 'flight: flight.full' })] }));

  it('a timeout resends per the retry policy (after its delay), then fails the step and compensates it too', () => {
    given([requested]).when(timeout()).then({ status: 'running', sent: [], timerPending: true });
    given([requested, timeout()]).when(timeout()).then({ status: 'running', sent: [send(BookFlight, ref)], check: (i) => assert.equal(i?.attempt, 2) });
    given([requested, timeout(), timeout()])
      .when(timeout())
      .then({
        status: 'compensating',
        // the flight may have been booked by one of the two unanswered attempts: it is cancelled
        sent: [send(CancelFlight, ref)],
        check: (i) => assert.match(i!.failure!.reason, /timed out: no reply within 5000 ms after 2 attempts/),
      });
  });

  it('a compensation failing past its retries leaves the instance stuck with the error', () => {
    const failed = [requested, booked, event(HotelFull, { tripId: 't1', why: 'x' })];
    given(failed).when(event(FlightCancelRefused, { tripId: 't1', why: 'airline down' })).then({ status: 'compensating', sent: [send(CancelFlight, ref)] });
    given([...failed, event(FlightCancelRefused, { tripId: 't1', why: 'airline down' })])
      .when(timeout())
      .then({
        status: 'stuck',
        sent: [],
        timerPending: false,
        check: (i) => assert.deepEqual(i?.error, { step: 'flight', message: 'timed out: no reply within 1000 ms', attempts: 2, at: SAGA_SPEC_EPOCH + 1000 }),
      });
  });

  it('a stuck instance ignores replies until resumed, then compensates again from attempt 1', () => {
    const stuck = [requested, booked, event(HotelFull, { tripId: 't1', why: 'x' }), timeout(), timeout()];
    given(stuck).when(event(FlightCancelled, ref)).then({ status: 'stuck', sent: [], check: (_i, _s, t) => assert.equal(t[0]?.kind, 'ignored') });
    given(stuck).when(resume()).then({ status: 'compensating', sent: [send(CancelFlight, ref)], check: (i) => assert.equal(i?.attempt, 1) });
    given([...stuck, resume()]).when(event(FlightCancelled, ref)).then({ status: 'compensated' });
  });

  it('a late reply to a step already left is ignored and recorded', () =>
    given([requested, timeout(), timeout(), timeout()])
      .when(booked)
      .then({
        status: 'compensating',
        sent: [],
        check: (_i, _s, t) => assert.deepEqual(t.map((e) => [e.kind, e.detail]), [['ignored', 'not a reply to the compensation of "flight"']]),
      }));

  it('a second start event for the same key is ignored', () =>
    given([requested]).when(requested).then({ status: 'running', sent: [], check: (_i, _s, t) => assert.equal(t[0]?.detail, 'the instance is already started') }));

  it('timeout() with no pending timer fails the specification', () => {
    assert.throws(() => given([requested, booked, event(HotelBooked, ref), event(CarBooked, ref)]).when(timeout()).then({}), AssertionError);
  });

  it('then reports the messages that differ', () => {
    assert.throws(() => given([]).when(requested).then({ sent: [send(BookHotel, ref)] }), AssertionError);
  });
});

describe('decideSaga', () => {
  const now = SAGA_SPEC_EPOCH;
  const start = (): SagaInstance<Trip> => decideSaga(trip, undefined, { kind: 'event', type: 'trip.requested', data: { tripId: 't1', car: true } }, { now, newId: () => 'i1' }).instance!;

  it('gives stable message and timer ids, and revision 1 to a new instance', () => {
    const d = decideSaga(trip, undefined, { kind: 'event', type: 'trip.requested', data: { tripId: 't1', car: true } }, { now, newId: () => 'i1' });
    assert.equal(d.expectedRevision, 0);
    assert.equal(d.instance?.revision, 1);
    assert.deepEqual(
      d.outgoing.map((o) => o.id),
      ['i1:flight:action:1:0'],
    );
    assert.deepEqual(d.timers, [{ id: 'i1/flight/action/1', saga: 'trip', key: 't1', instanceId: 'i1', step: 'flight', phase: 'action', attempt: 1, purpose: 'timeout', deliverAt: now + 5000 }]);
  });

  it('ignores a timer that is not the pending one, and one of an earlier instance', () => {
    const i = start();
    const stale = { id: 'i1/flight/action/0', saga: 'trip', key: 't1', instanceId: 'i1', step: 'flight', phase: 'action' as const, attempt: 0, purpose: 'timeout' as const, deliverAt: now };
    const d1 = decideSaga(trip, i, { kind: 'timer', timer: stale }, { now, newId: () => 'x' });
    assert.equal(d1.instance, undefined);
    assert.equal(d1.timeline[0]?.detail, 'timer no longer pending');
    const d2 = decideSaga(trip, i, { kind: 'timer', timer: { ...stale, id: i.timer!, instanceId: 'other' } }, { now, newId: () => 'x' });
    assert.equal(d2.timeline[0]?.detail, 'timer of an earlier instance');
  });

  it('cancels the pending timer when the reply comes', () => {
    const d = decideSaga(trip, start(), { kind: 'event', type: 'flight.booked', data: { tripId: 't1', seat: '1A' } }, { now, newId: () => 'x' });
    assert.deepEqual(d.cancelTimers, ['i1/flight/action/1']);
    assert.equal(d.expectedRevision, 1);
    assert.equal(d.instance?.revision, 2);
  });

  it('an action that throws fails the step; a compensation action that throws leaves the instance stuck', () => {
    const fragile = defineSaga<{ n: number }, { tripId: string; car: boolean }>({
      name: 'fragile',
      startedBy: { event: TripRequested, key: (d) => d.tripId, init: () => ({ n: 0 }) },
      steps: [
        { name: 'a', action: () => send(BookFlight, ref), replies: [onSuccess(FlightBooked)], compensation: { action: () => { throw new Error('undo broke'); } } },
        { name: 'b', action: () => { throw new Error('boom'); } },
      ],
    });
    const spec = SagaSpecification.for(fragile);
    spec([requested]).when(booked).then({
      status: 'stuck',
      check: (i) => {
        assert.equal(i?.failure?.reason, 'action threw: boom');
        assert.equal(i?.error?.message, 'compensation action threw: undo broke');
      },
    });
  });
});
