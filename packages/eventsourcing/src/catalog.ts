/**
 * The event catalog: which event types and schema versions a store writes and reads, and the
 * upcasters that turn old stored versions into the current one on read.
 *
 * - On append, each event's data is validated against its definition (Standard Schema, via
 *   @herald/core `defineEvent`) before anything is stored: `HERALD_ERR_SCHEMA_INVALID`,
 *   `HERALD_ERR_UNKNOWN_EVENT_TYPE` or `HERALD_ERR_UNKNOWN_EVENT_VERSION`. The schema's output
 *   is what gets stored. An event without `schemaVersion` is written at the newest version.
 * - On read, every stored event is brought to the newest version of its type by chaining
 *   upcasters (v1→v2→v3, possibly renaming the type on the way). Stored events are never
 *   rewritten. An event no chain leads to a known current version is
 *   `HERALD_ERR_UNKNOWN_STORED_EVENT` naming the stream and position — unless `unknownEvents`
 *   is `'skip'` (left out of reads, positions still advance) or `'pass'` (returned as stored).
 *   Data is not validated again on read unless `validateOnRead` is set (it was validated when
 *   written; upcasters are trusted code).
 *
 * A store without a catalog stores and returns any `{ type, data }` with JSON data.
 */
import { HeraldError, type EventDefinition, type MessageDefinition } from '@herald/core';
import { invalidArgument } from './errors.ts';

/** One step of an upcasting chain. */
export interface Upcaster {
  /** The stored type this step reads. */
  readonly type: string;
  /** The schema version this step reads. */
  readonly fromVersion: number;
  /** The version it produces (default `fromVersion + 1`). */
  readonly toVersion?: number;
  /** The type it produces (default: the same type). */
  readonly toType?: string;
  /** Pure: the data at `toType`/`toVersion`. Must not mutate `data`. */
  up(data: unknown, event: UpcastContext): unknown;
}

export interface UpcastContext {
  readonly streamId: string;
  readonly streamVersion: number;
  readonly position: bigint;
  readonly type: string;
  readonly schemaVersion: number;
  readonly recordedAt: number;
}

/** Shorthand for an `Upcaster` from `type` v`fromVersion` to v`fromVersion + 1`. */
export function upcaster(type: string, fromVersion: number, up: (data: any, event: UpcastContext) => unknown, options: { toVersion?: number; toType?: string } = {}): Upcaster {
  return { type, fromVersion, up, ...options };
}

export type UnknownEventPolicy = 'error' | 'skip' | 'pass';

export interface EventCatalogOptions {
  /** Event definitions (`defineEvent`); several versions of one type may be given. */
  readonly definitions?: readonly EventDefinition[] | readonly MessageDefinition[];
  readonly upcasters?: readonly Upcaster[];
  /** What a read does with a stored event no definition or upcaster covers (default `'error'`). */
  readonly unknownEvents?: UnknownEventPolicy;
  /** Validate data again on read, after upcasting (default false). */
  readonly validateOnRead?: boolean;
}

/** What `EventCatalog.read` decides for one stored event. */
export type CatalogReadResult =
  | { readonly kind: 'ok'; readonly type: string; readonly schemaVersion: number; readonly data: unknown; readonly upcasted: boolean }
  | { readonly kind: 'skip' };

const MAX_CHAIN = 64;

export class EventCatalog {
  readonly unknownEvents: UnknownEventPolicy;
  readonly validateOnRead: boolean;
  readonly #defs = new Map<string, Map<number, MessageDefinition>>();
  readonly #current = new Map<string, number>();
  readonly #upcasters = new Map<string, Upcaster>();

  constructor(options: EventCatalogOptions = {}) {
    const unknown = options.unknownEvents ?? 'error';
    if (unknown !== 'error' && unknown !== 'skip' && unknown !== 'pass') throw invalidArgument(`unknownEvents must be 'error', 'skip' or 'pass' (got ${String(unknown)})`);
    this.unknownEvents = unknown;
    this.validateOnRead = options.validateOnRead ?? false;
    for (const d of options.definitions ?? []) {
      if (typeof d !== 'object' || d === null || typeof d.type !== 'string' || !Number.isSafeInteger(d.version) || typeof d.schema?.['~standard']?.validate !== 'function') {
        throw invalidArgument('catalog definitions must come from defineEvent()');
      }
      let versions = this.#defs.get(d.type);
      if (!versions) this.#defs.set(d.type, (versions = new Map()));
      const existing = versions.get(d.version);
      if (existing && existing !== d) {
        throw new HeraldError('HERALD_ERR_DUPLICATE_DEFINITION', `event "${d.type}" v${d.version} is defined twice in the catalog`);
      }
      versions.set(d.version, d);
      this.#current.set(d.type, Math.max(this.#current.get(d.type) ?? 0, d.version));
    }
    for (const u of options.upcasters ?? []) {
      if (typeof u !== 'object' || u === null || typeof u.type !== 'string' || typeof u.up !== 'function' || !Number.isSafeInteger(u.fromVersion) || u.fromVersion < 1) {
        throw invalidArgument('an upcaster needs a type, a positive integer fromVersion and up()');
      }
      const to = u.toVersion ?? u.fromVersion + 1;
      const toType = u.toType ?? u.type;
      if (!Number.isSafeInteger(to) || to < 1 || (toType === u.type && to <= u.fromVersion)) {
        throw invalidArgument(`upcaster ${u.type} v${u.fromVersion}: toVersion must be a positive integer above fromVersion for the same type (got ${to})`);
      }
      const key = keyOf(u.type, u.fromVersion);
      if (this.#upcasters.has(key)) throw new HeraldError('HERALD_ERR_DUPLICATE_DEFINITION', `two upcasters read ${u.type} v${u.fromVersion}`);
      this.#upcasters.set(key, u);
    }
  }

  /** Whether `type` has a definition. */
  has(type: string): boolean {
    return this.#current.has(type);
  }

  /** The newest defined version of `type`. */
  currentVersion(type: string): number | undefined {
    return this.#current.get(type);
  }

  /** The definition of `type` at `version`. */
  definition(type: string, version: number): MessageDefinition | undefined {
    return this.#defs.get(type)?.get(version);
  }

  /**
   * Resolves the version an event is written at and validates its data; returns the data to
   * store (the schema's output). Throws the typed errors listed at the top.
   */
  async validateForAppend(type: string, schemaVersion: number | undefined, data: unknown): Promise<{ schemaVersion: number; data: unknown }> {
    const versions = this.#defs.get(type);
    if (!versions) {
      throw new HeraldError('HERALD_ERR_UNKNOWN_EVENT_TYPE', `event type "${type}" is not in the event store's catalog (known: ${[...this.#defs.keys()].join(', ') || 'none'})`, {
        details: { type },
      });
    }
    const version = schemaVersion ?? this.#current.get(type)!;
    const def = versions.get(version);
    if (!def) {
      throw new HeraldError('HERALD_ERR_UNKNOWN_EVENT_VERSION', `event type "${type}" has no version ${version} in the catalog (known: ${[...versions.keys()].map((v) => `v${v}`).join(', ')})`, {
        details: { type, version },
      });
    }
    return { schemaVersion: version, data: await def.parse(data) };
  }

  /**
   * Brings a stored event to the current version of its type. Synchronous: upcasters are
   * synchronous, and so must a schema be when `validateOnRead` is on.
   */
  read(stored: UpcastContext, data: unknown): CatalogReadResult {
    let type = stored.type;
    let version = stored.schemaVersion;
    let value = data;
    let steps = 0;
    for (;;) {
      const current = this.#current.get(type);
      if (current === version) break;
      const u = this.#upcasters.get(keyOf(type, version));
      if (!u) {
        if (this.unknownEvents === 'skip') return { kind: 'skip' };
        if (this.unknownEvents === 'pass') return { kind: 'ok', type: stored.type, schemaVersion: stored.schemaVersion, data, upcasted: false };
        throw unknownStored(stored, type, version, current);
      }
      if (++steps > MAX_CHAIN) throw invalidArgument(`upcasters for "${stored.type}" v${stored.schemaVersion} loop (more than ${MAX_CHAIN} steps)`);
      try {
        value = u.up(value, stored);
      } catch (cause) {
        throw new HeraldError('HERALD_ERR_CORRUPT_RECORD', `upcaster ${type} v${version} failed on stream "${stored.streamId}" v${stored.streamVersion} (position ${stored.position}): ${(cause as Error)?.message ?? String(cause)}`, {
          cause,
          details: { streamId: stored.streamId, streamVersion: stored.streamVersion, position: String(stored.position), type, schemaVersion: version },
        });
      }
      const nextType = u.toType ?? type;
      version = u.toVersion ?? version + 1;
      type = nextType;
    }
    if (this.validateOnRead) {
      const def = this.#defs.get(type)!.get(version)!;
      const result = def.schema['~standard'].validate(value);
      if (result instanceof Promise) throw invalidArgument(`validateOnRead needs synchronous schemas ("${type}" v${version} validates asynchronously)`);
      if (result.issues) {
        throw new HeraldError('HERALD_ERR_SCHEMA_INVALID', `stored event "${type}" v${version} on stream "${stored.streamId}" v${stored.streamVersion} (position ${stored.position}) fails its schema: ${result.issues.map((i) => i.message).join('; ')}`, {
          details: { streamId: stored.streamId, streamVersion: stored.streamVersion, position: String(stored.position), type, version },
        });
      }
      value = result.value;
    }
    return { kind: 'ok', type, schemaVersion: version, data: value, upcasted: steps > 0 };
  }
}

function keyOf(type: string, version: number): string {
  return `${version}\u0000${type}`;
}

function unknownStored(stored: UpcastContext, type: string, version: number, current: number | undefined): HeraldError {
  const why =
    current === undefined
      ? `type "${type}" is not in the catalog`
      : version > current
        ? `"${type}" v${version} is newer than the newest known version (v${current})`
        : `no upcaster reads "${type}" v${version} (current is v${current})`;
  return new HeraldError(
    'HERALD_ERR_UNKNOWN_STORED_EVENT',
    `cannot read the event at stream "${stored.streamId}" version ${stored.streamVersion} (position ${stored.position}): ${why}`,
    {
      details: {
        streamId: stored.streamId,
        streamVersion: stored.streamVersion,
        position: String(stored.position),
        type: stored.type,
        schemaVersion: stored.schemaVersion,
        ...(type !== stored.type || version !== stored.schemaVersion ? { upcastedTo: { type, schemaVersion: version } } : {}),
      },
    },
  );
}
