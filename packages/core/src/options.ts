/**
 * Checks for numeric options, shared by every package: each returns the value or throws
 * `HERALD_ERR_INVALID_ARGUMENT` naming the option and what it got.
 */
import { HeraldError } from './errors.ts';

export function positiveInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 1) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${name} must be a positive integer (got ${v})`);
  return v;
}

export function nonNegativeInt(name: string, v: number): number {
  if (!Number.isInteger(v) || v < 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${name} must be a non-negative integer (got ${v})`);
  return v;
}

export function positiveNumber(name: string, v: number): number {
  if (!(typeof v === 'number' && Number.isFinite(v) && v > 0)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${name} must be a positive number (got ${v})`);
  return v;
}

export function nonNegativeNumber(name: string, v: number): number {
  if (!(typeof v === 'number' && Number.isFinite(v) && v >= 0)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `${name} must be a non-negative number (got ${v})`);
  return v;
}

/** A topic's partition count: an integer from 1 to 4096. */
export function partitionCount(n: number): number {
  if (!Number.isInteger(n) || n < 1 || n > 4096) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `partitions must be an integer from 1 to 4096 (got ${n})`);
  return n;
}
