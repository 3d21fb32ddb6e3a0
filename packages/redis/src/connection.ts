/**
 * ioredis connections with Herald's defaults, and the mapping of Redis failures to Herald errors.
 */
import { HeraldError, isHeraldError } from '@herald/core';
import { Redis, type RedisOptions } from 'ioredis';

/** Where to connect: an ioredis options object or a `redis://` URL. */
export type RedisConnection = RedisOptions | string;

/**
 * Defaults Herald applies under the caller's options:
 * - `retryStrategy`: reconnect after 50 ms × attempt, at most every 500 ms, forever.
 * - `maxRetriesPerRequest: 20`: a command issued while Redis is unreachable waits in ioredis's
 *   offline queue and fails after 20 reconnect attempts (≈ 8 s with the retry strategy above).
 * - `autoResendUnfulfilledCommands: true` (ioredis's default, kept): a command written but not
 *   answered when the connection dropped is sent again after reconnecting. For XADD this may
 *   store a message twice (at-least-once); Herald's other writes are idempotent.
 */
export const CONNECTION_DEFAULTS: RedisOptions = {
  retryStrategy: (attempt: number) => Math.min(attempt * 50, 500),
  maxRetriesPerRequest: 20,
  enableAutoPipelining: false,
};

export function connect(connection: RedisConnection | undefined, name: string): Redis {
  if (typeof connection === 'string') return new Redis(connection, { ...CONNECTION_DEFAULTS, connectionName: name });
  return new Redis({ ...CONNECTION_DEFAULTS, connectionName: name, ...(connection ?? {}) });
}

/** Wraps a Redis or connection failure as HERALD_ERR_STORAGE (retryable); Herald errors pass through. */
export function storageError(e: unknown, what: string): HeraldError {
  if (isHeraldError(e)) return e;
  const message = e instanceof Error ? e.message : String(e);
  return new HeraldError('HERALD_ERR_STORAGE', `redis: ${what} failed: ${message}`, { cause: e });
}

/** QUIT with a bound, then drops the socket whatever happened. */
export async function disconnect(redis: Redis, timeoutMs = 1000): Promise<void> {
  if (redis.status === 'end') return;
  if (redis.status === 'ready') {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      redis.quit().catch(() => {}),
      new Promise<void>((r) => {
        timer = setTimeout(r, timeoutMs);
      }),
    ]);
    clearTimeout(timer);
  }
  redis.disconnect();
}
