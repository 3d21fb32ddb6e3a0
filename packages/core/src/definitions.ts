/**
 * Event and command definitions: a stable type name, a schema version and a schema that
 * implements Standard Schema (Zod 4, Valibot, ArkType…). Data is validated at publish and at
 * consume; a failure is `HERALD_ERR_SCHEMA_INVALID` naming the type, the version and every
 * failing path.
 *
 * On the wire the type name stays stable and the version travels in `dataschema` as
 * `urn:herald:schema:<type>:v<version>`. An envelope without `dataschema` is version 1.
 */
import type { StandardSchemaV1 } from '@standard-schema/spec';
import { HeraldError } from './errors.ts';
import type { CloudEvent } from './envelope.ts';

export type { StandardSchemaV1 };

export interface DefinitionOptions {
  /** Schema version, a positive integer (default 1). */
  readonly version?: number;
  /** Default topic to publish to and subscribe on. */
  readonly topic?: string;
  /** Data field that becomes the partition key when a publish names none. */
  readonly keyField?: string;
  /** Paths of personal data fields ('email', 'customer.address'; '*' matches any one segment): redacted from logs. */
  readonly personal?: readonly string[];
}

export interface MessageDefinition<T = unknown, Type extends string = string> {
  readonly kind: 'event' | 'command';
  readonly type: Type;
  readonly version: number;
  readonly topic: string | undefined;
  readonly keyField: string | undefined;
  /** Paths of personal data fields (see `DefinitionOptions.personal`); empty when none. */
  readonly personal: readonly string[];
  readonly schema: StandardSchemaV1<unknown, T>;
  /** `urn:herald:schema:<type>:v<version>` */
  readonly dataschema: string;
  /** Validates `data`, returning the schema's output; throws `HERALD_ERR_SCHEMA_INVALID`. */
  parse(data: unknown): Promise<T>;
}

export type EventDefinition<T = unknown, Type extends string = string> = MessageDefinition<T, Type> & { readonly kind: 'event' };
export type CommandDefinition<T = unknown, Type extends string = string> = MessageDefinition<T, Type> & { readonly kind: 'command' };

/** The data type a definition carries. */
export type DataOf<D> = D extends MessageDefinition<infer T, string> ? T : never;

const TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$/;

export function defineEvent<Type extends string, S extends StandardSchemaV1>(
  type: Type,
  schema: S,
  options: DefinitionOptions = {},
): EventDefinition<StandardSchemaV1.InferOutput<S>, Type> {
  return define('event', type, schema, options) as EventDefinition<StandardSchemaV1.InferOutput<S>, Type>;
}

export function defineCommand<Type extends string, S extends StandardSchemaV1>(
  type: Type,
  schema: S,
  options: DefinitionOptions = {},
): CommandDefinition<StandardSchemaV1.InferOutput<S>, Type> {
  return define('command', type, schema, options) as CommandDefinition<StandardSchemaV1.InferOutput<S>, Type>;
}

function define(kind: 'event' | 'command', type: string, schema: StandardSchemaV1, options: DefinitionOptions): MessageDefinition {
  if (typeof type !== 'string' || !TYPE_RE.test(type)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${kind} type must be 1–200 characters of letters, digits and . _ : / - (got ${JSON.stringify(type)})`);
  }
  if (typeof schema !== 'object' || schema === null || typeof (schema as Partial<StandardSchemaV1>)['~standard']?.validate !== 'function') {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${kind} "${type}": schema must implement Standard Schema (a "~standard" property with validate())`);
  }
  const version = options.version ?? 1;
  if (typeof version !== 'number' || !Number.isSafeInteger(version) || version < 1) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${kind} "${type}": version must be a positive integer (got ${version})`);
  }
  const def: MessageDefinition = {
    kind,
    type,
    version,
    topic: options.topic,
    keyField: options.keyField,
    personal: personalPaths(kind, type, options.personal),
    schema,
    dataschema: dataschemaFor(type, version),
    parse: (data) => validateData(def, data),
  };
  return Object.freeze(def);
}

const PERSONAL_PATH_RE = /^(?:\*|[A-Za-z_$][\w$-]*)(?:\.(?:\*|[A-Za-z_$][\w$-]*))*$/;

function personalPaths(kind: string, type: string, paths: readonly string[] | undefined): readonly string[] {
  if (paths === undefined) return Object.freeze([]);
  if (!Array.isArray(paths)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${kind} "${type}": personal must be an array of field paths`);
  const bad = paths.filter((p) => typeof p !== 'string' || !PERSONAL_PATH_RE.test(p));
  if (bad.length > 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${kind} "${type}": personal paths must be dot-separated field names or '*' (got ${bad.map((b) => JSON.stringify(b)).join(', ')})`);
  return Object.freeze([...paths]);
}

export function dataschemaFor(type: string, version: number): string {
  return `urn:herald:schema:${type}:v${version}`;
}

const HERALD_DATASCHEMA_PREFIX = 'urn:herald:schema:';
const HERALD_DATASCHEMA_RE = /^urn:herald:schema:(.+):v([1-9]\d*)$/;

/**
 * The schema version an envelope carries: `<n>` from `urn:herald:schema:<type>:v<n>`, and 1
 * when it has no `dataschema` or one that is not Herald's (another producer's schema URI).
 * `undefined` when the Herald URN is malformed (`v0`, `v01`, no version), names a different
 * type than `envelope.type` (when given), or the number is not a safe integer.
 */
export function versionOf(envelope: Pick<CloudEvent, 'dataschema'> & { readonly type?: string }): number | undefined {
  const ds = envelope.dataschema;
  if (ds === undefined || !ds.startsWith(HERALD_DATASCHEMA_PREFIX)) return 1;
  const m = HERALD_DATASCHEMA_RE.exec(ds);
  if (!m) return undefined;
  if (envelope.type !== undefined && m[1] !== envelope.type) return undefined;
  const n = Number(m[2]);
  return Number.isSafeInteger(n) ? n : undefined;
}

export interface SchemaIssue {
  readonly path: string;
  readonly message: string;
}

/** Validates `data` against `def`; throws `HERALD_ERR_SCHEMA_INVALID` listing every issue. */
export async function validateData<T>(def: MessageDefinition<T>, data: unknown): Promise<T> {
  // `await` covers sync results, native promises and foreign thenables alike.
  return valueOf(def, await def.schema['~standard'].validate(data));
}

/**
 * `validateData` without a promise when the schema answers synchronously (zod, valibot,
 * arktype do): the value, or a throw; a promise only for an asynchronous schema. For the
 * per-message paths (publish, consume), where a promise and a microtask per message add up.
 */
export function checkData<T>(def: MessageDefinition<T>, data: unknown): T | Promise<T> {
  const result = def.schema['~standard'].validate(data);
  if (isThenable(result)) return Promise.resolve(result).then((r) => valueOf(def, r));
  return valueOf(def, result);
}

/** Whether `value` is a promise or a foreign thenable. */
export function isThenable<T>(value: unknown): value is PromiseLike<T> {
  return typeof value === 'object' && value !== null && typeof (value as { then?: unknown }).then === 'function';
}

function valueOf<T>(def: MessageDefinition<T>, result: StandardSchemaV1.Result<unknown>): T {
  if (!result.issues) return result.value as T;
  const issues: SchemaIssue[] = result.issues.map((i) => ({ path: formatPath(i.path), message: i.message }));
  throw new HeraldError(
    'HERALD_ERR_SCHEMA_INVALID',
    `${def.kind} "${def.type}" v${def.version} failed validation: ${issues.map((i) => `${i.path}: ${i.message}`).join('; ')}`,
    { details: { type: def.type, version: def.version, issues } },
  );
}

function formatPath(path: StandardSchemaV1.Issue['path']): string {
  if (!path || path.length === 0) return '(root)';
  return path
    .map((seg) => {
      const k = typeof seg === 'object' && seg !== null ? seg.key : seg;
      return typeof k === 'number' ? `[${k}]` : `.${String(k)}`;
    })
    .join('')
    .replace(/^\./, '');
}

/** Definitions by type and version; resolves an envelope to its definition. */
export class DefinitionRegistry {
  readonly #byType = new Map<string, Map<number, MessageDefinition>>();

  constructor(definitions: Iterable<MessageDefinition> = []) {
    for (const d of definitions) this.add(d);
  }

  /**
   * Adds a definition. Adding the same definition object again is a no-op; another
   * definition with the same type and version is `HERALD_ERR_DUPLICATE_DEFINITION`; an
   * object that is not a valid definition is `HERALD_ERR_INVALID_ARGUMENT`.
   */
  add(def: MessageDefinition): this {
    const problem = definitionProblem(def);
    if (problem) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `not a valid definition: ${problem}`);
    let versions = this.#byType.get(def.type);
    if (!versions) this.#byType.set(def.type, (versions = new Map()));
    const existing = versions.get(def.version);
    if (existing && existing !== def) {
      throw new HeraldError('HERALD_ERR_DUPLICATE_DEFINITION', `${def.kind} "${def.type}" v${def.version} is already defined`);
    }
    versions.set(def.version, def);
    return this;
  }

  has(type: string): boolean {
    return this.#byType.has(type);
  }

  types(): string[] {
    return [...this.#byType.keys()];
  }

  /** The definition for an envelope; `HERALD_ERR_UNKNOWN_EVENT_TYPE` / `_VERSION` when there is none. */
  resolve(envelope: Pick<CloudEvent, 'type' | 'dataschema'>): MessageDefinition {
    const versions = this.#byType.get(envelope.type);
    if (!versions) {
      throw new HeraldError('HERALD_ERR_UNKNOWN_EVENT_TYPE', `unknown event type "${envelope.type}" (known: ${this.types().join(', ') || 'none'})`, {
        details: { type: envelope.type },
      });
    }
    const version = versionOf(envelope);
    const def = version === undefined ? undefined : versions.get(version);
    if (!def) {
      throw new HeraldError(
        'HERALD_ERR_UNKNOWN_EVENT_VERSION',
        `event type "${envelope.type}" has no version ${version ?? `matching dataschema "${envelope.dataschema}"`} (known: ${[...versions.keys()].map((v) => `v${v}`).join(', ')})`,
        { details: { type: envelope.type, dataschema: envelope.dataschema, version } },
      );
    }
    return def;
  }
}

function definitionProblem(def: unknown): string | undefined {
  if (typeof def !== 'object' || def === null) return `expected a definition from defineEvent/defineCommand (got ${String(def)})`;
  const d = def as Partial<MessageDefinition>;
  if (typeof d.type !== 'string' || !TYPE_RE.test(d.type)) return `type must be 1–200 characters of letters, digits and . _ : / - (got ${JSON.stringify(d.type)})`;
  if (typeof d.version !== 'number' || !Number.isSafeInteger(d.version) || d.version < 1) return `"${d.type}": version must be a positive integer (got ${String(d.version)})`;
  if (typeof d.schema !== 'object' || d.schema === null || typeof d.schema['~standard']?.validate !== 'function') return `"${d.type}": schema must implement Standard Schema`;
  return undefined;
}
