/**
 * What a script can rely on: exit codes, error lines, JSON.
 *
 *   0  success
 *   1  failure (a store, a server, a child process failed)
 *   2  usage error (unknown command or option, bad argument, bad or missing config file)
 *   3  not found (the dead letter, stream, projection or service named does not exist)
 *
 * Errors go to stderr as one line `herald: <CODE>: <message>` (CODE: the `HERALD_ERR_…` code —
 * usage errors found by the CLI itself are `HERALD_ERR_INVALID_ARGUMENT` too —, Node's own code
 * such as `ENOENT`, or `ERROR`); with `--json` the same error is
 * also written to stdout as `{ "error": { "code", "message" } }`. JSON output is one document
 * on stdout, bigints as decimal strings.
 */
import { isHeraldError } from '@herald/core';

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;
export const EXIT_NOT_FOUND = 3;

/** A usage error found by the CLI itself (not by a store). */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function exitCodeOf(e: unknown): number {
  if (e instanceof UsageError) return EXIT_USAGE;
  if (isHeraldError(e)) {
    if (e.code === 'HERALD_ERR_INVALID_ARGUMENT') return EXIT_USAGE;
    if (e.code === 'HERALD_ERR_NOT_FOUND') return EXIT_NOT_FOUND;
  }
  return EXIT_FAILURE;
}

export function errorCodeOf(e: unknown): string {
  if (e instanceof UsageError) return 'HERALD_ERR_INVALID_ARGUMENT';
  if (isHeraldError(e)) return e.code;
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : 'ERROR';
}

export interface Io {
  out(text: string): void;
  err(text: string): void;
}

export const processIo: Io = {
  out: (t) => process.stdout.write(t),
  err: (t) => process.stderr.write(t),
};

/** JSON with bigints as decimal strings, one document and a newline. */
export function printJson(io: Io, value: unknown): void {
  io.out(`${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

/** A plain text table: columns padded to the widest cell. */
export function printTable(io: Io, header: readonly string[], rows: ReadonlyArray<readonly unknown[]>): void {
  const cells = [header, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '-' : String(c))))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  for (const r of cells) io.out(`${r.map((c, i) => (i === r.length - 1 ? c : (c ?? '').padEnd(widths[i]!))).join('  ')}\n`);
}

export function reportError(io: Io, e: unknown, json: boolean): number {
  const code = errorCodeOf(e);
  const message = (e as Error)?.message ?? String(e);
  io.err(`herald: ${code}: ${message}\n`);
  if (json) printJson(io, { error: { code, message } });
  return exitCodeOf(e);
}
