/**
 * The one partitioner: murmur2 over the UTF-8 bytes of the key, seed 0x9747b28c, positive
 * mod partitions — the same as Kafka's default partitioner, so a key lands on the same
 * partition on every Herald transport and in Kafka itself.
 */

import { HeraldError } from './errors.ts';

const SEED = 0x9747b28c;
const M = 0x5bd1e995;
const encoder = new TextEncoder();

/** Kafka's murmur2 (signed 32-bit result, as Java computes it). */
export function murmur2(data: Uint8Array): number {
  const length = data.length;
  let h = (SEED ^ length) | 0;
  const length4 = length >> 2;
  for (let i = 0; i < length4; i++) {
    const i4 = i << 2;
    let k = (data[i4]! & 0xff) | ((data[i4 + 1]! & 0xff) << 8) | ((data[i4 + 2]! & 0xff) << 16) | ((data[i4 + 3]! & 0xff) << 24);
    k = Math.imul(k, M);
    k ^= k >>> 24;
    k = Math.imul(k, M);
    h = Math.imul(h, M);
    h ^= k;
  }
  const rest = length & 3;
  const base = length & ~3;
  if (rest === 3) h ^= (data[base + 2]! & 0xff) << 16;
  if (rest >= 2) h ^= (data[base + 1]! & 0xff) << 8;
  if (rest >= 1) {
    h ^= data[base]! & 0xff;
    h = Math.imul(h, M);
  }
  h ^= h >>> 13;
  h = Math.imul(h, M);
  h ^= h >>> 15;
  return h | 0;
}

/**
 * Partition for `key` among `partitions` (Kafka: `toPositive(murmur2(key)) % partitions`).
 * The key is hashed as UTF-8 (`TextEncoder`, like `Buffer.from(key)`; a lone surrogate
 * becomes U+FFFD, where Java's `getBytes(UTF_8)` would write "?"). `partitions` must be a
 * positive integer, else `HERALD_ERR_INVALID_ARGUMENT`.
 */
export function partitionForKey(key: string, partitions: number): number {
  checkPartitions(partitions);
  if (typeof key !== 'string') throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `partition key must be a string (got ${typeof key})`);
  return (murmur2(encoder.encode(key)) & 0x7fffffff) % partitions;
}

/** Round-robin for messages without a key. Not shared across processes. */
export class RoundRobin {
  #next = 0;
  next(partitions: number): number {
    checkPartitions(partitions);
    const p = this.#next % partitions;
    this.#next = (this.#next + 1) % 0x7fffffff;
    return p;
  }
}

function checkPartitions(partitions: number): void {
  if (!Number.isSafeInteger(partitions) || partitions < 1) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `partitions must be a positive integer (got ${String(partitions)})`);
  }
}
