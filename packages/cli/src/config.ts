/**
 * The `herald.config.json` contract: which backend a system uses, which services it runs and
 * how the console is served. Loaded and validated here, once, for every command; a bad file is
 * a `HERALD_ERR_INVALID_ARGUMENT` whose message names the file and the field (`services[1].entry`).
 *
 *   { "name": "shop",
 *     "backend": { "kind": "sqlite", "path": ".herald/shop.db" },
 *     "env": { "KEY": "value" },
 *     "services": [ { "name": "order", "entry": "services/order.ts", "env": { "PORT": "4100" }, "restart": true } ],
 *     "console": { "port": 4000 },
 *     "projections": [ { "name": "order-summary", "module": "projections/order-summary.ts" } ],
 *     "views": [ { "category": "order", "module": "views/order.ts" } ] }
 *
 * Paths are relative to the config file and come back absolute. `backend` may instead be
 * `{ "kind": "postgres", "url": "...", "schema": "..." }`, with an optional
 * `"transport": { "kind": "nats", "servers": "..." }`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { HeraldError } from '@herald/core';

export type BackendConfig = { readonly kind: 'sqlite'; readonly path: string } | { readonly kind: 'postgres'; readonly url: string; readonly schema?: string };

export interface TransportConfig {
  readonly kind: 'nats';
  readonly servers: string;
}

export interface ServiceConfig {
  readonly name: string;
  /** Absolute path of the service's entry module (run as `node --import tsx <entry>`). */
  readonly entry: string;
  readonly env: Readonly<Record<string, string>>;
  /** Restart after a crash (default true). */
  readonly restart: boolean;
}

/** A module whose default export (or `projection` export) is a `SqliteProjectionDefinition`; `herald projections rebuild <name>` rebuilds it. */
export interface ProjectionConfig {
  readonly name: string;
  readonly module: string;
}

/** A module exporting `initialState()` and `evolve(state, event)` for the streams of `category`: the console's time travel folds with it. */
export interface ViewConfig {
  readonly category: string;
  readonly module: string;
}

export interface HeraldConfig {
  /** Absolute path of the config file. */
  readonly file: string;
  /** Its folder (service processes run there). */
  readonly dir: string;
  readonly name: string;
  readonly backend: BackendConfig;
  readonly transport?: TransportConfig;
  readonly env: Readonly<Record<string, string>>;
  readonly services: readonly ServiceConfig[];
  readonly console: { readonly port: number };
  readonly projections: readonly ProjectionConfig[];
  readonly views: readonly ViewConfig[];
}

export const DEFAULT_CONFIG_FILE = 'herald.config.json';
export const DEFAULT_CONSOLE_PORT = 4000;
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** Reads and validates a config file. Throws `HERALD_ERR_INVALID_ARGUMENT` naming the file and the bad field. */
export function loadConfig(path: string = DEFAULT_CONFIG_FILE): HeraldConfig {
  const file = resolve(path);
  if (!existsSync(file)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `no config file at ${file} (give one with --config <file>)`, { details: { file } });
  }
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (cause) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${file} is not valid JSON: ${(cause as Error).message}`, { cause, details: { file } });
  }
  return parseConfig(raw, file);
}

/** Validates an already parsed config object; `file` locates relative paths and names the file in errors. */
export function parseConfig(raw: unknown, file: string): HeraldConfig {
  const dir = dirname(file);
  const bad = (field: string, what: string): HeraldError =>
    new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${file}: ${field} ${what}`, { details: { file, field } });
  const obj = (v: unknown, field: string): Record<string, unknown> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad(field, `must be an object (got ${kindOf(v)})`);
    return v as Record<string, unknown>;
  };
  const str = (v: unknown, field: string): string => {
    if (typeof v !== 'string' || v.length === 0) throw bad(field, `must be a non-empty string (got ${kindOf(v)})`);
    return v;
  };
  const path = (v: unknown, field: string): string => {
    const s = str(v, field);
    return isAbsolute(s) ? s : resolve(dir, s);
  };
  const env = (v: unknown, field: string): Record<string, string> => {
    if (v === undefined) return {};
    const o = obj(v, field);
    const out: Record<string, string> = {};
    for (const [k, val] of Object.entries(o)) {
      if (typeof val === 'string') out[k] = val;
      else if (typeof val === 'number' || typeof val === 'boolean') out[k] = String(val);
      else throw bad(`${field}.${k}`, `must be a string, number or boolean (got ${kindOf(val)})`);
    }
    return out;
  };
  const list = <T>(v: unknown, field: string, each: (item: unknown, field: string) => T): T[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v)) throw bad(field, `must be an array (got ${kindOf(v)})`);
    return v.map((item, i) => each(item, `${field}[${i}]`));
  };
  const known = (o: Record<string, unknown>, field: string, keys: readonly string[]): void => {
    for (const k of Object.keys(o)) if (!keys.includes(k)) throw bad(field === '' ? k : `${field}.${k}`, `is not a known field (known: ${keys.join(', ')})`);
  };

  const root = obj(raw, '(top level)');
  known(root, '', ['$schema', 'name', 'backend', 'transport', 'env', 'services', 'console', 'projections', 'views']);
  const name = str(root.name, 'name');

  const b = obj(root.backend, 'backend');
  let backend: BackendConfig;
  if (b.kind === 'sqlite') {
    known(b, 'backend', ['kind', 'path']);
    backend = { kind: 'sqlite', path: path(b.path, 'backend.path') };
  } else if (b.kind === 'postgres') {
    known(b, 'backend', ['kind', 'url', 'schema']);
    backend = { kind: 'postgres', url: str(b.url, 'backend.url'), ...(b.schema !== undefined ? { schema: str(b.schema, 'backend.schema') } : {}) };
  } else {
    throw bad('backend.kind', `must be "sqlite" or "postgres" (got ${JSON.stringify(b.kind)})`);
  }

  let transport: TransportConfig | undefined;
  if (root.transport !== undefined) {
    const t = obj(root.transport, 'transport');
    known(t, 'transport', ['kind', 'servers']);
    if (t.kind !== 'nats') throw bad('transport.kind', `must be "nats" (got ${JSON.stringify(t.kind)})`);
    transport = { kind: 'nats', servers: str(t.servers, 'transport.servers') };
  }

  const seen = new Set<string>();
  const services = list(root.services, 'services', (item, field): ServiceConfig => {
    const s = obj(item, field);
    known(s, field, ['name', 'entry', 'env', 'restart']);
    const serviceName = str(s.name, `${field}.name`);
    if (!NAME_RE.test(serviceName)) throw bad(`${field}.name`, `must be 1–64 letters, digits, '_', '.' or '-' (got ${JSON.stringify(serviceName)})`);
    if (seen.has(serviceName)) throw bad(`${field}.name`, `repeats the service name "${serviceName}"`);
    seen.add(serviceName);
    const entry = path(s.entry, `${field}.entry`);
    if (!existsSync(entry)) throw bad(`${field}.entry`, `names a file that does not exist: ${entry}`);
    if (s.restart !== undefined && typeof s.restart !== 'boolean') throw bad(`${field}.restart`, `must be true or false (got ${kindOf(s.restart)})`);
    return { name: serviceName, entry, env: env(s.env, `${field}.env`), restart: s.restart ?? true };
  });

  let port = DEFAULT_CONSOLE_PORT;
  if (root.console !== undefined) {
    const c = obj(root.console, 'console');
    known(c, 'console', ['port']);
    if (c.port !== undefined) {
      if (typeof c.port !== 'number' || !Number.isInteger(c.port) || c.port < 0 || c.port > 65535) throw bad('console.port', `must be an integer from 0 to 65535 (got ${JSON.stringify(c.port)})`);
      port = c.port;
    }
  }

  const projections = list(root.projections, 'projections', (item, field): ProjectionConfig => {
    const p = obj(item, field);
    known(p, field, ['name', 'module']);
    return { name: str(p.name, `${field}.name`), module: path(p.module, `${field}.module`) };
  });
  const views = list(root.views, 'views', (item, field): ViewConfig => {
    const v = obj(item, field);
    known(v, field, ['category', 'module']);
    return { category: str(v.category, `${field}.category`), module: path(v.module, `${field}.module`) };
  });

  return { file, dir, name, backend, ...(transport ? { transport } : {}), env: env(root.env, 'env'), services, console: { port }, projections, views };
}

function kindOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'object') return 'an object';
  return `${typeof v} ${String(v)}`;
}
