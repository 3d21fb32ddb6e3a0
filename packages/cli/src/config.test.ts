import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { loadConfig, parseConfig } from './config.ts';

const dir = mkdtempSync(join(tmpdir(), 'herald-config-'));
after(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(join(dir, 'svc.ts'), '');
const file = join(dir, 'herald.config.json');

const valid = {
  name: 'shop',
  backend: { kind: 'sqlite', path: '.herald/shop.db' },
  env: { A: '1', B: 2, C: true },
  services: [{ name: 'order', entry: 'svc.ts', env: { PORT: '4100' } }, { name: 'pay', entry: 'svc.ts', restart: false }],
  console: { port: 4001 },
  projections: [{ name: 'p', module: 'p.ts' }],
  views: [{ category: 'order', module: 'v.ts' }],
};

/** Asserts that parsing `patch` applied to the valid config fails naming `field`. */
function rejects(patch: (c: Record<string, unknown>) => void, field: string, message: RegExp): void {
  const c = structuredClone(valid) as Record<string, unknown>;
  patch(c);
  assert.throws(
    () => parseConfig(c, file),
    (e: unknown) => {
      assert.ok(isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'), String(e));
      assert.equal((e.details as { field: string }).field, field);
      assert.match(e.message, message);
      assert.ok(e.message.startsWith(`${file}: ${field} `), e.message);
      return true;
    },
  );
}

describe('config', () => {
  it('resolves paths against the config file and fills defaults', () => {
    const c = parseConfig(valid, file);
    assert.deepEqual(c.backend, { kind: 'sqlite', path: join(dir, '.herald/shop.db') });
    assert.deepEqual(c.env, { A: '1', B: '2', C: 'true' });
    assert.deepEqual(
      c.services.map((s) => [s.name, s.entry, s.restart, s.env]),
      [
        ['order', join(dir, 'svc.ts'), true, { PORT: '4100' }],
        ['pay', join(dir, 'svc.ts'), false, {}],
      ],
    );
    assert.equal(c.console.port, 4001);
    assert.equal(c.projections[0]!.module, join(dir, 'p.ts'));
    assert.equal(c.views[0]!.category, 'order');
    const minimal = parseConfig({ name: 'x', backend: { kind: 'postgres', url: 'postgres://localhost/test', schema: 's' } }, file);
    assert.equal(minimal.console.port, 4000);
    assert.deepEqual(minimal.services, []);
    assert.deepEqual(minimal.backend, { kind: 'postgres', url: 'postgres://localhost/test', schema: 's' });
  });

  it('names the bad field in every error', () => {
    rejects((c) => delete c.name, 'name', /must be a non-empty string \(got undefined/);
    rejects((c) => (c.backend = { kind: 'mysql' }), 'backend.kind', /must be "sqlite" or "postgres" \(got "mysql"\)/);
    rejects((c) => (c.backend = { kind: 'sqlite' }), 'backend.path', /non-empty string/);
    rejects((c) => (c.services = {}), 'services', /must be an array/);
    rejects((c) => ((c.services as Array<Record<string, unknown>>)[1]!.entry = 'nope.ts'), 'services[1].entry', /names a file that does not exist/);
    rejects((c) => ((c.services as Array<Record<string, unknown>>)[1]!.name = 'order'), 'services[1].name', /repeats the service name "order"/);
    rejects((c) => ((c.services as Array<Record<string, unknown>>)[0]!.name = 'bad name'), 'services[0].name', /letters, digits/);
    rejects((c) => ((c.services as Array<Record<string, unknown>>)[0]!.restart = 'yes'), 'services[0].restart', /true or false/);
    rejects((c) => ((c.services as Array<Record<string, unknown>>)[0]!.env = { X: {} }), 'services[0].env.X', /string, number or boolean/);
    rejects((c) => (c.console = { port: 70000 }), 'console.port', /0 to 65535/);
    rejects((c) => (c.servces = []), 'servces', /is not a known field/);
    rejects((c) => (c.transport = { kind: 'kafka', servers: 'x' }), 'transport.kind', /must be "nats"/);
  });

  it('reports a missing file and bad JSON as usage errors naming the file', () => {
    assert.throws(() => loadConfig(join(dir, 'missing.json')), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /no config file at .*missing\.json/.test(e.message));
    writeFileSync(join(dir, 'broken.json'), '{ "name": ');
    assert.throws(() => loadConfig(join(dir, 'broken.json')), (e: unknown) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && /broken\.json is not valid JSON/.test(e.message));
  });
});
