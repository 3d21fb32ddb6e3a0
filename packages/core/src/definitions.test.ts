import { test } from 'node:test';
import assert from 'node:assert/strict';
import { z } from 'zod';
import {
  DefinitionRegistry,
  dataschemaFor,
  defineCommand,
  defineEvent,
  validateData,
  versionOf,
  type CommandDefinition,
  type DataOf,
  type EventDefinition,
  type MessageDefinition,
  type StandardSchemaV1,
} from './definitions.ts';
import { isHeraldError, type HeraldError } from './errors.ts';

const OrderPlaced = defineEvent(
  'shop.order.placed',
  z.object({
    orderId: z.string(),
    items: z.array(z.object({ sku: z.string().min(1), qty: z.number().int().positive() })),
    customer: z.object({ email: z.email(), address: z.object({ zip: z.string().regex(/^\d{5}$/) }) }),
    placedAt: z.iso.datetime().transform((s) => new Date(s)),
  }),
  { version: 2, topic: 'orders', keyField: 'orderId' },
);

const validOrder = {
  orderId: 'o-1',
  items: [{ sku: 'A-1', qty: 2 }],
  customer: { email: 'ann@example.com', address: { zip: '12345' } },
  placedAt: '2024-05-01T10:00:00Z',
};

// ---- compile-time checks (run by `tsc -b`; a wrong type fails the build) ----------------
type Equal<A, B> = (<X>() => X extends A ? 1 : 2) extends <X>() => X extends B ? 1 : 2 ? true : false;
type OrderData = DataOf<typeof OrderPlaced>;
const dataIsTheSchemaOutput: Equal<
  OrderData,
  {
    orderId: string;
    items: { sku: string; qty: number }[];
    customer: { email: string; address: { zip: string } };
    placedAt: Date; // the transform's output, not the input string
  }
> = true;
const typeIsLiteral: Equal<(typeof OrderPlaced)['type'], 'shop.order.placed'> = true;
// A typed handler receives the output type: `placedAt` is a Date here.
const handler = async (data: OrderData): Promise<number> => data.placedAt.getTime() + data.items[0]!.qty;
const parseReturnsOutput = OrderPlaced.parse satisfies (data: unknown) => Promise<OrderData>;
// @ts-expect-error - the handler's data is the schema's output: placedAt is not a string
const wrongHandler: (data: OrderData) => string = (data) => data.placedAt.toUpperCase();
const ShipOrder = defineCommand('shop.order.ship', z.object({ orderId: z.string(), express: z.boolean().default(false) }));
const commandDataIsOutput: Equal<DataOf<typeof ShipOrder>, { orderId: string; express: boolean }> = true;
const kindsAreTyped: [EventDefinition<OrderData, 'shop.order.placed'>, CommandDefinition<{ orderId: string; express: boolean }, 'shop.order.ship'>] = [OrderPlaced, ShipOrder];
void [dataIsTheSchemaOutput, typeIsLiteral, commandDataIsOutput, parseReturnsOutput, wrongHandler, kindsAreTyped];

async function rejectsWith(p: Promise<unknown>, code: HeraldError['code']): Promise<HeraldError> {
  try {
    await p;
  } catch (e) {
    assert.ok(isHeraldError(e, code), `expected ${code}, got ${String(e)}`);
    return e;
  }
  assert.fail(`expected ${code}, but it resolved`);
}

function throwsWith(fn: () => unknown, code: HeraldError['code']): HeraldError {
  try {
    fn();
  } catch (e) {
    assert.ok(isHeraldError(e, code), `expected ${code}, got ${String(e)}`);
    return e;
  }
  assert.fail(`expected ${code}, but nothing was thrown`);
}

test('defineEvent and defineCommand build frozen definitions with kind, version, topic, keyField and dataschema', () => {
  assert.equal(OrderPlaced.kind, 'event');
  assert.equal(OrderPlaced.type, 'shop.order.placed');
  assert.equal(OrderPlaced.version, 2);
  assert.equal(OrderPlaced.topic, 'orders');
  assert.equal(OrderPlaced.keyField, 'orderId');
  assert.equal(OrderPlaced.dataschema, 'urn:herald:schema:shop.order.placed:v2');
  assert.ok(Object.isFrozen(OrderPlaced));

  assert.equal(ShipOrder.kind, 'command');
  assert.equal(ShipOrder.version, 1, 'version defaults to 1');
  assert.equal(ShipOrder.topic, undefined);
  assert.equal(ShipOrder.dataschema, 'urn:herald:schema:shop.order.ship:v1');
  assert.equal(dataschemaFor('a/b:c-d_e', 12), 'urn:herald:schema:a/b:c-d_e:v12');
});

test("parse returns the schema's output (transforms and defaults applied)", async () => {
  const out = await OrderPlaced.parse(validOrder);
  assert.ok(out.placedAt instanceof Date);
  assert.equal(out.placedAt.toISOString(), '2024-05-01T10:00:00.000Z');
  assert.equal(await handler(out), Date.parse('2024-05-01T10:00:00Z') + 2);
  assert.deepEqual(await ShipOrder.parse({ orderId: 'o-1' }), { orderId: 'o-1', express: false });
  assert.deepEqual(await validateData(ShipOrder, { orderId: 'o-2', express: true }), { orderId: 'o-2', express: true });
});

test('HERALD_ERR_SCHEMA_INVALID names the type, the version and every failing path, nested and in arrays', async () => {
  const bad = {
    orderId: 7,
    items: [
      { sku: 'A-1', qty: 1 },
      { sku: '', qty: -1 },
      { qty: 1 },
    ],
    customer: { email: 'not-an-email', address: { zip: 'abc' } },
    placedAt: '2024-05-01T10:00:00Z',
  };
  const e = await rejectsWith(OrderPlaced.parse(bad), 'HERALD_ERR_SCHEMA_INVALID');
  assert.equal(e.retryable, false);
  assert.match(e.message, /event "shop\.order\.placed" v2 failed validation/);
  const expectedPaths = ['orderId', 'items[1].sku', 'items[1].qty', 'items[2].sku', 'customer.email', 'customer.address.zip'];
  for (const p of expectedPaths) assert.ok(e.message.includes(`${p}: `), `message names ${p}: ${e.message}`);
  assert.equal(e.details.type, 'shop.order.placed');
  assert.equal(e.details.version, 2);
  const issues = e.details.issues as Array<{ path: string; message: string }>;
  assert.deepEqual(issues.map((i) => i.path).sort(), [...expectedPaths].sort(), 'every failing path, and only those');
  assert.ok(issues.every((i) => typeof i.message === 'string' && i.message.length > 0));

  // validateData is the same check.
  const again = await rejectsWith(validateData(OrderPlaced, bad), 'HERALD_ERR_SCHEMA_INVALID');
  assert.deepEqual(again.details.issues, e.details.issues);
});

test('a failure at the root is reported as (root); commands say "command"', async () => {
  const e = await rejectsWith(ShipOrder.parse('not an object'), 'HERALD_ERR_SCHEMA_INVALID');
  assert.match(e.message, /^command "shop\.order\.ship" v1 failed validation: \(root\): /);
  assert.deepEqual(
    (e.details.issues as Array<{ path: string }>).map((i) => i.path),
    ['(root)'],
  );
});

test('Standard Schema path segments given as { key } objects are formatted the same way', async () => {
  const schema: StandardSchemaV1<unknown, unknown> = {
    '~standard': {
      version: 1,
      vendor: 'hand-made',
      validate: () => ({
        issues: [
          { message: 'missing', path: [{ key: 'items' }, { key: 3 }, 'sku'] },
          { message: 'odd', path: ['a', 0, { key: 'b' }, 1] },
        ],
      }),
    },
  };
  const def = defineEvent('hand.made', schema);
  const e = await rejectsWith(def.parse({}), 'HERALD_ERR_SCHEMA_INVALID');
  assert.deepEqual(e.details.issues, [
    { path: 'items[3].sku', message: 'missing' },
    { path: 'a[0].b[1]', message: 'odd' },
  ]);
});

test('async Standard Schema validators: zod async refinements and a hand-made async schema', async () => {
  const taken = new Set(['ann']);
  const UserRegistered = defineEvent(
    'users.registered',
    z.object({ name: z.string(), tags: z.array(z.string()) }).refine(async (v) => !taken.has(v.name), { message: 'name taken', path: ['name'] }),
  );
  assert.deepEqual(await UserRegistered.parse({ name: 'bob', tags: [] }), { name: 'bob', tags: [] });
  const e = await rejectsWith(UserRegistered.parse({ name: 'ann', tags: [] }), 'HERALD_ERR_SCHEMA_INVALID');
  assert.deepEqual(e.details.issues, [{ path: 'name', message: 'name taken' }]);

  const slowUpper: StandardSchemaV1<unknown, string> = {
    '~standard': {
      version: 1,
      vendor: 'hand-made',
      validate: async (v) => {
        await new Promise((r) => setTimeout(r, 1));
        return typeof v === 'string' ? { value: v.toUpperCase() } : { issues: [{ message: 'expected a string', path: [] }] };
      },
    },
  };
  const Shout = defineEvent('shout', slowUpper, { version: 3 });
  const upper: string = await Shout.parse('hey');
  assert.equal(upper, 'HEY');
  const e2 = await rejectsWith(Shout.parse(5), 'HERALD_ERR_SCHEMA_INVALID');
  assert.match(e2.message, /event "shout" v3 failed validation: \(root\): expected a string/);

  // A thenable that is not a native Promise (another realm, a userland promise) is awaited too.
  const thenable: StandardSchemaV1<unknown, number> = {
    '~standard': {
      version: 1,
      vendor: 'hand-made',
      validate: () => ({ then: (ok: (r: StandardSchemaV1.Result<number>) => void) => ok({ value: 42 }) }) as unknown as Promise<StandardSchemaV1.Result<number>>,
    },
  };
  assert.equal(await defineEvent('thenable', thenable).parse(null), 42);
});

test('versionOf reads the version from dataschema', () => {
  assert.equal(versionOf({}), 1, 'no dataschema is version 1');
  assert.equal(versionOf({ dataschema: 'urn:herald:schema:shop.order.placed:v2' }), 2);
  assert.equal(versionOf({ type: 'shop.order.placed', dataschema: 'urn:herald:schema:shop.order.placed:v17' }), 17);
  assert.equal(versionOf({ type: 'a:b:v9', dataschema: 'urn:herald:schema:a:b:v9:v4' }), 4, 'type names may contain ":v<n>" themselves');
  assert.equal(versionOf({ dataschema: dataschemaFor('x/y', 5) }), 5);
  // Another producer's schema URI is not a Herald version: version 1.
  assert.equal(versionOf({ dataschema: 'https://example.com/schemas/order.json' }), 1);
  assert.equal(versionOf({ dataschema: 'https://example.com/schemas/order:v3' }), 1, 'only the Herald URN carries a version');
  // A malformed Herald URN, or one naming another type, has no version.
  for (const ds of ['urn:herald:schema:x:v0', 'urn:herald:schema:x:v01', 'urn:herald:schema:x:v', 'urn:herald:schema:x', 'urn:herald:schema:x:v1.5', 'urn:herald:schema::v1', 'urn:herald:schema:x:v99999999999999999999']) {
    assert.equal(versionOf({ dataschema: ds }), undefined, ds);
  }
  assert.equal(versionOf({ type: 'shop.order.placed', dataschema: 'urn:herald:schema:shop.order.shipped:v2' }), undefined);
});

test('DefinitionRegistry resolves by type and dataschema version', () => {
  const v1 = defineEvent('shop.order.placed', z.object({ orderId: z.string() }));
  const registry = new DefinitionRegistry([v1, OrderPlaced, ShipOrder]);
  assert.equal(registry.resolve({ type: 'shop.order.placed' }), v1, 'no dataschema: version 1');
  assert.equal(registry.resolve({ type: 'shop.order.placed', dataschema: v1.dataschema }), v1);
  assert.equal(registry.resolve({ type: 'shop.order.placed', dataschema: OrderPlaced.dataschema }), OrderPlaced);
  assert.equal(registry.resolve({ type: 'shop.order.ship', dataschema: 'https://example.com/ship.json' }), ShipOrder, 'foreign dataschema: version 1');
  assert.equal(registry.has('shop.order.placed'), true);
  assert.equal(registry.has('nope'), false);
  assert.deepEqual(registry.types().sort(), ['shop.order.placed', 'shop.order.ship']);
});

test('resolve: unknown type is HERALD_ERR_UNKNOWN_EVENT_TYPE, unknown version HERALD_ERR_UNKNOWN_EVENT_VERSION', () => {
  const registry = new DefinitionRegistry([OrderPlaced]);
  const t = throwsWith(() => registry.resolve({ type: 'shop.order.cancelled' }), 'HERALD_ERR_UNKNOWN_EVENT_TYPE');
  assert.equal(t.retryable, false);
  assert.equal(t.details.type, 'shop.order.cancelled');
  assert.match(t.message, /"shop\.order\.cancelled".*known: shop\.order\.placed/);
  throwsWith(() => new DefinitionRegistry().resolve({ type: 'x' }), 'HERALD_ERR_UNKNOWN_EVENT_TYPE');

  const v = throwsWith(() => registry.resolve({ type: 'shop.order.placed', dataschema: 'urn:herald:schema:shop.order.placed:v3' }), 'HERALD_ERR_UNKNOWN_EVENT_VERSION');
  assert.equal(v.retryable, false);
  assert.deepEqual(v.details, { type: 'shop.order.placed', dataschema: 'urn:herald:schema:shop.order.placed:v3', version: 3 });
  assert.match(v.message, /no version 3 \(known: v2\)/);
  // Only v2 is known, so the implicit version 1 is unknown as well.
  throwsWith(() => registry.resolve({ type: 'shop.order.placed' }), 'HERALD_ERR_UNKNOWN_EVENT_VERSION');
  // A malformed URN or one naming another type is an unknown version, named in the message.
  const m = throwsWith(() => registry.resolve({ type: 'shop.order.placed', dataschema: 'urn:herald:schema:shop.order.shipped:v2' }), 'HERALD_ERR_UNKNOWN_EVENT_VERSION');
  assert.match(m.message, /matching dataschema "urn:herald:schema:shop\.order\.shipped:v2"/);
  throwsWith(() => registry.resolve({ type: 'shop.order.placed', dataschema: 'urn:herald:schema:shop.order.placed:v02' }), 'HERALD_ERR_UNKNOWN_EVENT_VERSION');
});

test('a second definition of the same type and version is HERALD_ERR_DUPLICATE_DEFINITION; the same one again is fine', () => {
  const registry = new DefinitionRegistry([OrderPlaced]);
  registry.add(OrderPlaced); // idempotent
  const twin = defineEvent('shop.order.placed', z.object({}), { version: 2 });
  const e = throwsWith(() => registry.add(twin), 'HERALD_ERR_DUPLICATE_DEFINITION');
  assert.equal(e.retryable, false);
  assert.match(e.message, /"shop\.order\.placed" v2 is already defined/);
  throwsWith(() => new DefinitionRegistry([OrderPlaced, twin]), 'HERALD_ERR_DUPLICATE_DEFINITION');
  assert.equal(registry.resolve({ type: 'shop.order.placed', dataschema: OrderPlaced.dataschema }), OrderPlaced, 'the first one stays');
  registry.add(defineEvent('shop.order.placed', z.object({}), { version: 3 })); // another version is fine
});

test('bad definitions are HERALD_ERR_INVALID_ARGUMENT: type name, schema, version', () => {
  const schema = z.object({});
  const anyDefine = defineEvent as unknown as (type: unknown, schema: unknown, options?: unknown) => unknown;
  for (const type of ['', 'has space', '-leading-dash', 'émoji', 'a'.repeat(201), 'semi;colon', 42, undefined, null]) {
    const e = throwsWith(() => anyDefine(type, schema), 'HERALD_ERR_INVALID_ARGUMENT');
    assert.match(e.message, /type must be/, String(type));
  }
  assert.equal(defineEvent('a'.repeat(200), schema).type.length, 200, '200 characters is the limit');
  for (const type of ['Order', 'shop.order.placed', 'com.example/orders:placed', 'a_b-c', '9lives']) defineEvent(type, schema);

  for (const bad of [{}, null, undefined, 'zod', { '~standard': {} }, { '~standard': { validate: 'no' } }, z]) {
    const e = throwsWith(() => anyDefine('ok.type', bad), 'HERALD_ERR_INVALID_ARGUMENT');
    assert.match(e.message, /Standard Schema/);
  }
  for (const version of [0, -1, 1.5, Number.NaN, Number.POSITIVE_INFINITY, 2 ** 53, '2']) {
    const e = throwsWith(() => anyDefine('ok.type', schema, { version }), 'HERALD_ERR_INVALID_ARGUMENT');
    assert.match(e.message, /version must be a positive integer/, String(version));
  }
  throwsWith(() => (defineCommand as unknown as (t: unknown, s: unknown, o?: unknown) => unknown)('ok.cmd', schema, { version: 0 }), 'HERALD_ERR_INVALID_ARGUMENT');
});

test('the registry refuses hand-built objects that are not valid definitions', () => {
  const registry = new DefinitionRegistry();
  const good = defineEvent('ok.type', z.object({}));
  for (const bad of [
    { ...good, type: 'bad type' },
    { ...good, version: 0 },
    { ...good, schema: {} },
    null,
  ]) {
    throwsWith(() => registry.add(bad as unknown as MessageDefinition), 'HERALD_ERR_INVALID_ARGUMENT');
  }
  assert.deepEqual(registry.types(), [], 'nothing was half-added');
});
