import assert from 'node:assert/strict';
import { test } from 'node:test';
import { z } from 'zod';
import { createConsumer, createEnvelope, createMemoryTransport, createPublisher, defineEvent, MemoryDeadLetterStore } from '@herald/core';
import { uniqueName, waitFor } from '@herald/testkit';
import { createLogger, REDACTED, redactData } from './index.ts';

function capture(): { lines: Record<string, unknown>[]; stream: { write(s: string): void } } {
  const lines: Record<string, unknown>[] = [];
  return { lines, stream: { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) } };
}

const Registered = defineEvent(
  'customer.registered',
  z.object({ customerId: z.string(), email: z.string(), address: z.object({ street: z.string(), city: z.string() }), phones: z.array(z.object({ number: z.string(), kind: z.string() })) }),
  { topic: 'customers', keyField: 'customerId', personal: ['email', 'address.street', 'phones.number'] },
);

test('lines logged inside a handler carry service, event id, type, correlation, causation and trace ids', async () => {
  const { lines, stream } = capture();
  const log = createLogger({ service: 'crm', destination: stream, definitions: [Registered] });
  const topic = uniqueName('customers');
  const transport = createMemoryTransport();
  const publisher = createPublisher({ transport, source: 'crm' });
  const consumer = createConsumer({ transport, group: 'mailer', deadLetters: new MemoryDeadLetterStore() });
  consumer.handle(
    Registered,
    async () => {
      await Promise.resolve();
      log.info('welcome mail sent');
    },
    { topic },
  );
  await consumer.start();
  const cause = createEnvelope({ type: 'signup.submitted', source: 'web', id: 'cause-1', correlationid: 'corr-1' });
  await publisher.publish(
    Registered,
    { customerId: 'c-1', email: 'ann@example.com', address: { street: '1 Main St', city: 'Oslo' }, phones: [] },
    { topic, causedBy: cause, traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01' },
  );
  await waitFor(() => lines.length === 1);
  await consumer.close();
  log.info('outside');
  log.unbind();
  const [inside, outside] = lines;
  assert.equal(inside!.service, 'crm');
  assert.equal(inside!.msg, 'welcome mail sent');
  assert.equal(inside!.type, 'customer.registered');
  assert.equal(typeof inside!.eventId, 'string');
  assert.equal(inside!.correlationId, 'corr-1');
  assert.equal(inside!.causationId, 'cause-1');
  assert.equal(inside!.traceId, '0af7651916cd43dd8448eb211c80319c');
  assert.equal(inside!.group, 'mailer');
  assert.equal(outside!.service, 'crm');
  assert.equal(outside!.eventId, undefined, 'outside a handler no event fields');
});

test('fields marked personal are redacted from logged envelopes (per type) and logged data', () => {
  const { lines, stream } = capture();
  const log = createLogger({ service: 'crm', destination: stream, definitions: [Registered], bindHandlers: false });
  const data = { customerId: 'c-1', email: 'ann@example.com', address: { street: '1 Main St', city: 'Oslo' }, phones: [{ number: '+47 1234', kind: 'mobile' }] };
  const event = createEnvelope({ type: 'customer.registered', source: 'crm', data });
  const other = createEnvelope({ type: 'unrelated.thing', source: 'crm', data: { email: 'kept@example.com' } });
  log.info({ event }, 'registered');
  log.info({ event: other }, 'other type');
  log.info({ data }, 'raw data');
  const loggedEvent = lines[0]!.event as { data: typeof data; id: string };
  assert.equal(loggedEvent.data.email, REDACTED);
  assert.equal(loggedEvent.data.address.street, REDACTED);
  assert.equal(loggedEvent.data.address.city, 'Oslo');
  assert.deepEqual(loggedEvent.data.phones, [{ number: REDACTED, kind: 'mobile' }]);
  assert.equal(loggedEvent.id, event.id);
  assert.equal((lines[1]!.event as { data: { email: string } }).data.email, 'kept@example.com', 'another type keeps its fields');
  const loggedData = lines[2]!.data as typeof data;
  assert.equal(loggedData.email, REDACTED);
  assert.equal(loggedData.address.street, REDACTED);
  assert.equal(loggedData.address.city, 'Oslo');
  assert.deepEqual(loggedData.phones, [{ number: REDACTED, kind: 'mobile' }]);
  assert.equal(data.email, 'ann@example.com', 'the caller’s object is untouched');
  assert.equal(event.data!.email, 'ann@example.com');
  const text = JSON.stringify(lines);
  assert.ok(!text.includes('ann@example.com') && !text.includes('1 Main St'), 'no personal value anywhere in the output');
});

test('redactData handles wildcards and leaves unknown paths alone', () => {
  assert.deepEqual(redactData({ a: { x: 1, y: 2 }, b: 3 }, ['a.*']), { a: { x: REDACTED, y: REDACTED }, b: 3 });
  assert.deepEqual(redactData({ a: 1 }, ['nope.deeper']), { a: 1 });
  assert.deepEqual(redactData([{ s: 1 }, { s: 2 }], ['s']), [{ s: REDACTED }, { s: REDACTED }]);
  assert.equal(redactData('plain', ['x']), 'plain');
});

test('a definition refuses malformed personal paths', () => {
  assert.throws(() => defineEvent('x.y', z.object({}), { personal: ['a..b'] }), /personal paths/);
  assert.throws(() => defineEvent('x.y', z.object({}), { personal: 'email' as unknown as string[] }), /personal must be an array/);
});
