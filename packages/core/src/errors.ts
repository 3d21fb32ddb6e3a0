/**
 * Herald's typed errors. Every error Herald throws is a `HeraldError` with a stable string
 * `code` (never reused), a `retryable` flag that decides retry versus dead-letter in the
 * router, an optional `cause`, and optional structured `details`.
 *
 * Checks use a symbol brand (`isHeraldError`), not `instanceof`, so they keep working when
 * two copies of the library are loaded.
 *
 * `docs/reference/errors.md` has one heading per code; a test keeps the two in sync.
 */

const BRAND: unique symbol = Symbol.for('herald.error');

/** Every stable code, with whether it is retryable by default and a one-line meaning. */
export const ERROR_CODES = {
  HERALD_ERR_INVALID_ARGUMENT: { retryable: false, summary: 'An option or argument is missing, of the wrong type or out of range.' },
  HERALD_ERR_ENVELOPE_INVALID: { retryable: false, summary: 'A CloudEvents envelope is malformed: a required attribute is missing, an attribute name or value breaks the spec.' },
  HERALD_ERR_DECODE: { retryable: false, summary: 'Bytes could not be decoded into an envelope: they are not UTF-8 or not JSON. (JSON that is not an envelope object is HERALD_ERR_ENVELOPE_INVALID.)' },
  HERALD_ERR_SCHEMA_INVALID: { retryable: false, summary: "Event or command data failed its definition's schema; the error names the type, version and every failing path." },
  HERALD_ERR_UNKNOWN_EVENT_TYPE: { retryable: false, summary: 'An event type is not defined in the registry that was asked for it.' },
  HERALD_ERR_UNKNOWN_EVENT_VERSION: { retryable: false, summary: 'An event type is known but the schema version it carries is not.' },
  HERALD_ERR_DUPLICATE_DEFINITION: { retryable: false, summary: 'The same event type and version (or the same handler for a type) was registered twice.' },
  HERALD_ERR_PAYLOAD_TOO_LARGE: { retryable: false, summary: "An encoded message is larger than the transport's maxPayloadBytes; nothing was sent." },
  HERALD_ERR_CORRUPT_RECORD: { retryable: false, summary: 'A stored record could not be read back (bad bytes, bad JSON, missing column); only that record is affected.' },
  HERALD_ERR_TOPIC_MISMATCH: { retryable: false, summary: 'A topic exists with a different partition count than the one asked for; partition counts are fixed.' },
  HERALD_ERR_CLOSED: { retryable: false, summary: 'The transport, subscription, consumer or store was used after close().' },
  HERALD_ERR_LEASE_LOST: { retryable: true, summary: 'A write was fenced: the lease (owner and epoch) it was made under is no longer current.' },
  HERALD_ERR_HANDLER_TIMEOUT: { retryable: true, summary: "A handler attempt ran past its time limit; its AbortSignal was aborted." },
  HERALD_ERR_NOT_FOUND: { retryable: false, summary: 'The dead letter, lease or record asked for does not exist.' },
  HERALD_ERR_PERMANENT: { retryable: false, summary: 'Thrown by user code (PermanentError) to send a message straight to dead letters without retries.' },
  HERALD_ERR_TRANSIENT: { retryable: true, summary: 'Thrown by user code (TransientError) to mark a failure as worth retrying.' },
  HERALD_ERR_STORAGE: { retryable: true, summary: 'The backing store failed (busy, I/O); the operation may succeed if retried.' },
  HERALD_ERR_CONCURRENCY: { retryable: true, summary: "An append's expectedVersion did not match the stream's actual version; the error carries both. Reload, decide again, retry." },
  HERALD_ERR_STREAM_DELETED: { retryable: false, summary: 'The stream was tombstoned (hard-deleted): it can never be read or appended to again.' },
  HERALD_ERR_IDEMPOTENCY_CONFLICT: { retryable: false, summary: 'An append repeats event ids already in the stream, but not as the same events at the same versions (a partial overlap).' },
  HERALD_ERR_UNKNOWN_STORED_EVENT: { retryable: false, summary: "A stored event's type or schema version is unknown to the reader and no upcaster or ignore-unknown option covers it; names the stream and position." },
  HERALD_ERR_WAIT_TIMEOUT: { retryable: true, summary: 'A bounded wait (waitForPosition, a rebuild step) ran out of time before its condition held.' },
  HERALD_ERR_PROJECTION_FAILED: { retryable: false, summary: 'A projection stopped because its handler kept failing on an event; names the projection and the position.' },
  HERALD_ERR_SCHEMA_TOO_NEW: { retryable: false, summary: 'The database schema was migrated by newer Herald code than this one; this code refuses to run against it. Names the component and both versions.' },
  HERALD_ERR_NOT_CONFIGURED: { retryable: false, summary: 'A feature was used that needs an option the object was created without (ctx.transaction without unitOfWork, a future deliverAt without scheduler); names the option.' },
} as const satisfies Record<string, { retryable: boolean; summary: string }>;

export type HeraldErrorCode = keyof typeof ERROR_CODES;

export interface HeraldErrorOptions {
  cause?: unknown;
  /** Overrides the code's default retryability. */
  retryable?: boolean;
  details?: Record<string, unknown>;
}

export class HeraldError extends Error {
  readonly [BRAND] = true;
  readonly code: HeraldErrorCode;
  readonly retryable: boolean;
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: HeraldErrorCode, message: string, options: HeraldErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'HeraldError';
    this.code = code;
    // `?.`: a JavaScript caller may pass a code this copy of the library does not know.
    this.retryable = options.retryable ?? (ERROR_CODES as Record<string, { retryable: boolean } | undefined>)[code]?.retryable ?? false;
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }

  toJSON(): Record<string, unknown> {
    return { name: this.name, code: this.code, message: this.message, retryable: this.retryable, details: this.details };
  }
}

/** Throw from a handler to skip retries and dead-letter the message at once. */
export class PermanentError extends HeraldError {
  constructor(message: string, options: Omit<HeraldErrorOptions, 'retryable'> = {}) {
    super('HERALD_ERR_PERMANENT', message, { ...options, retryable: false });
    this.name = 'PermanentError';
  }
}

/** Throw from a handler to say the failure is worth retrying (the default for plain errors). */
export class TransientError extends HeraldError {
  constructor(message: string, options: Omit<HeraldErrorOptions, 'retryable'> = {}) {
    super('HERALD_ERR_TRANSIENT', message, { ...options, retryable: true });
    this.name = 'TransientError';
  }
}

/** True when `e` is a Herald error (from any copy of the library), optionally with `code`. */
export function isHeraldError(e: unknown, code?: HeraldErrorCode): e is HeraldError {
  if (typeof e !== 'object' || e === null || (e as Record<symbol, unknown>)[BRAND] !== true) return false;
  return code === undefined || (e as HeraldError).code === code;
}

/**
 * Whether the router should retry after `e`. Herald errors say so themselves; any other
 * error is retryable unless it carries `retryable: false`.
 */
export function isRetryable(e: unknown): boolean {
  if (isHeraldError(e)) return e.retryable;
  if (typeof e === 'object' && e !== null && 'retryable' in e) return (e as { retryable: unknown }).retryable !== false;
  return true;
}

/**
 * A plain summary of any thrown value, for dead letters and logs. Errors from another realm
 * (or error-like objects with a string `message`) are summarised like errors.
 */
export function describeError(e: unknown): { code?: string; message: string; stack?: string; name?: string } {
  if (e instanceof Error || (typeof e === 'object' && e !== null && typeof (e as { message?: unknown }).message === 'string')) {
    const err = e as { message: string; name?: unknown; code?: unknown; stack?: unknown };
    const out: { code?: string; message: string; stack?: string; name?: string } = { message: err.message };
    if (typeof err.name === 'string') out.name = err.name;
    if (typeof err.code === 'string') out.code = err.code;
    if (typeof err.stack === 'string') out.stack = err.stack;
    return out;
  }
  return { message: typeof e === 'string' ? e : safeStringify(e) };
}

function safeStringify(v: unknown): string {
  try {
    return JSON.stringify(v) ?? String(v);
  } catch {
    return String(v);
  }
}
