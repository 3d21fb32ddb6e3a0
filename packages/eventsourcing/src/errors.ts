/**
 * The event store's typed errors. Codes live in @herald/core's registry (see
 * docs/reference/errors.md); this file builds them with the details every backend reports.
 */
import { HeraldError, type HeraldErrorOptions } from '@herald/core';
import type { ExpectedVersion } from './types.ts';

/**
 * `HERALD_ERR_CONCURRENCY`: the stream's version did not match `expectedVersion`. Retryable:
 * reload, decide again, append again (the command handler does it).
 */
export class ConcurrencyError extends HeraldError {
  readonly streamId: string;
  readonly expectedVersion: ExpectedVersion;
  readonly actualVersion: number;

  constructor(streamId: string, expectedVersion: ExpectedVersion, actualVersion: number, options: Omit<HeraldErrorOptions, 'details'> = {}) {
    super('HERALD_ERR_CONCURRENCY', `stream "${streamId}": expected version ${String(expectedVersion)}, but the stream is at version ${actualVersion}`, {
      ...options,
      details: { streamId, expectedVersion, actualVersion },
    });
    this.name = 'ConcurrencyError';
    this.streamId = streamId;
    this.expectedVersion = expectedVersion;
    this.actualVersion = actualVersion;
  }
}

export function streamDeleted(streamId: string): HeraldError {
  return new HeraldError('HERALD_ERR_STREAM_DELETED', `stream "${streamId}" was tombstoned: it can no longer be read or appended to`, { details: { streamId } });
}

export function idempotencyConflict(streamId: string, ids: readonly string[], existing: ReadonlyArray<{ id: string; version: number }>, why: string): HeraldError {
  return new HeraldError(
    'HERALD_ERR_IDEMPOTENCY_CONFLICT',
    `stream "${streamId}": the append repeats event ids already stored (${existing.map((e) => `${e.id}@v${e.version}`).slice(0, 5).join(', ')}${existing.length > 5 ? ', …' : ''}) but is not an exact retry: ${why}`,
    { details: { streamId, ids: [...ids], existing: existing.map((e) => ({ ...e })) } },
  );
}

export function invalidArgument(message: string, details?: Record<string, unknown>): HeraldError {
  return new HeraldError('HERALD_ERR_INVALID_ARGUMENT', message, details ? { details } : {});
}

export function closedError(what: string): HeraldError {
  return new HeraldError('HERALD_ERR_CLOSED', `${what} is closed`);
}
