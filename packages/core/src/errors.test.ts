import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { ERROR_CODES, HeraldError, PermanentError, TransientError, describeError, isHeraldError, isRetryable, type HeraldErrorCode } from './errors.ts';

const CODES = Object.keys(ERROR_CODES) as HeraldErrorCode[];

test('every code is HERALD_ERR_ + upper snake case, with a summary', () => {
  assert.ok(CODES.length > 0);
  for (const code of CODES) {
    assert.match(code, /^HERALD_ERR_[A-Z0-9]+(_[A-Z0-9]+)*$/);
    assert.ok(ERROR_CODES[code].summary.length > 10, code);
  }
});

test('a HeraldError carries code, message, default retryable, details and cause', () => {
  const cause = new Error('disk on fire');
  const e = new HeraldError('HERALD_ERR_STORAGE', 'write failed', { cause, details: { table: 'outbox' } });
  assert.ok(e instanceof Error);
  assert.equal(e.name, 'HeraldError');
  assert.equal(e.code, 'HERALD_ERR_STORAGE');
  assert.equal(e.message, 'write failed');
  assert.equal(e.retryable, true, 'STORAGE is retryable by default');
  assert.equal(e.cause, cause, 'cause is kept');
  assert.deepEqual(e.details, { table: 'outbox' });
  assert.ok(Object.isFrozen(e.details));
  assert.equal(typeof e.stack, 'string');

  for (const code of CODES) assert.equal(new HeraldError(code, 'x').retryable, ERROR_CODES[code].retryable, code);
  assert.equal(new HeraldError('HERALD_ERR_STORAGE', 'x', { retryable: false }).retryable, false, 'override to false');
  assert.equal(new HeraldError('HERALD_ERR_CORRUPT_RECORD', 'x', { retryable: true }).retryable, true, 'override to true');
  assert.equal('cause' in new HeraldError('HERALD_ERR_CLOSED', 'x'), false, 'no cause property when none is given');
});

test('toJSON is a plain summary without the stack', () => {
  const e = new HeraldError('HERALD_ERR_NOT_FOUND', 'no such dead letter', { details: { id: 'dl-1' } });
  assert.deepEqual(JSON.parse(JSON.stringify(e)), {
    name: 'HeraldError',
    code: 'HERALD_ERR_NOT_FOUND',
    message: 'no such dead letter',
    retryable: false,
    details: { id: 'dl-1' },
  });
});

test('isHeraldError with and without a code', () => {
  const e = new HeraldError('HERALD_ERR_CLOSED', 'closed');
  assert.equal(isHeraldError(e), true);
  assert.equal(isHeraldError(e, 'HERALD_ERR_CLOSED'), true);
  assert.equal(isHeraldError(e, 'HERALD_ERR_STORAGE'), false);
  for (const other of [new Error('plain'), { code: 'HERALD_ERR_CLOSED' }, 'HERALD_ERR_CLOSED', null, undefined, 42]) {
    assert.equal(isHeraldError(other), false, String(other));
    assert.equal(isHeraldError(other, 'HERALD_ERR_CLOSED'), false, String(other));
  }
  // A look-alike with the code but not the brand is not a Herald error.
  const lookAlike = Object.assign(new Error('x'), { code: 'HERALD_ERR_CLOSED', retryable: false });
  assert.equal(isHeraldError(lookAlike), false);
});

test('the brand survives a second copy of the library (same Symbol.for brand, different class)', () => {
  // What a second installed copy of @herald/core would construct: its own class, the same
  // registered symbol.
  const brand = Symbol.for('herald.error');
  class OtherCopyHeraldError extends Error {
    readonly [brand] = true;
    readonly code = 'HERALD_ERR_LEASE_LOST';
    readonly retryable = false; // overridden in that copy
    readonly details = {};
  }
  const foreign: unknown = new OtherCopyHeraldError('fenced');
  assert.equal(foreign instanceof HeraldError, false, 'instanceof fails across copies…');
  assert.equal(isHeraldError(foreign), true, '…the brand does not');
  assert.equal(isHeraldError(foreign, 'HERALD_ERR_LEASE_LOST'), true);
  assert.equal(isHeraldError(foreign, 'HERALD_ERR_CLOSED'), false);
  assert.equal(isRetryable(foreign), false, "the foreign error's own retryable flag is read");

  // A plain object from another realm or a structured clone that kept the brand also counts.
  const plain = { [brand]: true, code: 'HERALD_ERR_STORAGE', retryable: true, message: 'busy' };
  assert.equal(isHeraldError(plain, 'HERALD_ERR_STORAGE'), true);
  // The brand must be exactly true.
  assert.equal(isHeraldError({ [brand]: 'yes', code: 'HERALD_ERR_STORAGE' }), false);
});

test('PermanentError is never retried, TransientError always is; both keep their cause', () => {
  const cause = new TypeError('bad');
  const p = new PermanentError('invalid order', { cause, details: { orderId: 'o-1' } });
  assert.equal(p.name, 'PermanentError');
  assert.equal(p.code, 'HERALD_ERR_PERMANENT');
  assert.equal(p.retryable, false);
  assert.equal(p.cause, cause);
  assert.deepEqual(p.details, { orderId: 'o-1' });
  assert.ok(p instanceof HeraldError && isHeraldError(p, 'HERALD_ERR_PERMANENT'));
  assert.equal(isRetryable(p), false);

  const t = new TransientError('upstream 503', { cause });
  assert.equal(t.name, 'TransientError');
  assert.equal(t.code, 'HERALD_ERR_TRANSIENT');
  assert.equal(t.retryable, true);
  assert.equal(t.cause, cause);
  assert.equal(isRetryable(t), true);

  // Smuggling `retryable` through at runtime does not flip them.
  const opts = { retryable: true } as unknown as Record<string, never>;
  assert.equal(new PermanentError('x', opts).retryable, false);
  assert.equal(new TransientError('x', { retryable: false } as unknown as Record<string, never>).retryable, true);
});

test('isRetryable: Herald errors say so themselves; other errors retry unless they carry retryable: false', () => {
  assert.equal(isRetryable(new HeraldError('HERALD_ERR_SCHEMA_INVALID', 'x')), false);
  assert.equal(isRetryable(new HeraldError('HERALD_ERR_HANDLER_TIMEOUT', 'x')), true);
  assert.equal(isRetryable(new Error('boom')), true, 'a plain error is retryable');
  assert.equal(isRetryable(new TypeError('boom')), true);
  assert.equal(isRetryable(Object.assign(new Error('no'), { retryable: false })), false);
  assert.equal(isRetryable(Object.assign(new Error('yes'), { retryable: true })), true);
  assert.equal(isRetryable({ retryable: false }), false);
  assert.equal(isRetryable('a thrown string'), true);
  assert.equal(isRetryable(undefined), true);
  assert.equal(isRetryable(null), true);
});

test('describeError summarises errors, Herald errors, error-likes and thrown non-errors', () => {
  const h = describeError(new HeraldError('HERALD_ERR_DECODE', 'not JSON'));
  assert.equal(h.code, 'HERALD_ERR_DECODE');
  assert.equal(h.name, 'HeraldError');
  assert.equal(h.message, 'not JSON');
  assert.match(h.stack ?? '', /not JSON/);

  const plain = describeError(new RangeError('too big'));
  assert.deepEqual({ ...plain, stack: undefined }, { name: 'RangeError', message: 'too big', stack: undefined });
  assert.equal('code' in plain, false);

  const node = describeError(Object.assign(new Error('refused'), { code: 'ECONNREFUSED' }));
  assert.equal(node.code, 'ECONNREFUSED');
  assert.equal(describeError(Object.assign(new Error('n'), { code: 42 })).code, undefined, 'non-string codes are dropped');

  // An error-like object (e.g. from another realm) keeps its fields.
  assert.deepEqual(describeError({ name: 'Error', message: 'from a vm', code: 'E1' }), { name: 'Error', message: 'from a vm', code: 'E1' });

  assert.deepEqual(describeError('just a string'), { message: 'just a string' });
  assert.deepEqual(describeError({ status: 500 }), { message: '{"status":500}' });
  assert.deepEqual(describeError(undefined), { message: 'undefined' });
  assert.deepEqual(describeError(42n), { message: '42' }, 'a bigint does not make describeError throw');
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.deepEqual(describeError(cyclic), { message: '[object Object]' }, 'a cycle does not make describeError throw');
});

// ---------------------------------------------------------------------------------------
// Doc sync: docs/reference/errors.md has exactly one "## HERALD_ERR_…" heading per code.

const DOC = fileURLToPath(new URL('../../../docs/reference/errors.md', import.meta.url));

function docSections(text: string): Map<string, string[]> {
  const sections = new Map<string, string[]>();
  const headings: string[] = [];
  let current: string[] | undefined;
  for (const line of text.split('\n')) {
    const m = /^##\s+(\S.*?)\s*$/.exec(line);
    if (m && !line.startsWith('###')) {
      headings.push(m[1]!);
      current = [];
      if (m[1]!.startsWith('HERALD_ERR_')) {
        assert.equal(sections.has(m[1]!), false, `heading ${m[1]} appears more than once in errors.md`);
        sections.set(m[1]!, current);
      }
      continue;
    }
    current?.push(line);
  }
  return sections;
}

test('docs/reference/errors.md has exactly one heading per code: none missing, none extra', () => {
  const text = readFileSync(DOC, 'utf8');
  const sections = docSections(text);
  const documented = [...sections.keys()];
  const missing = CODES.filter((c) => !sections.has(c));
  const extra = documented.filter((c) => !(c in ERROR_CODES));
  assert.deepEqual(missing, [], `codes without a heading in errors.md: ${missing.join(', ')}`);
  assert.deepEqual(extra, [], `headings in errors.md that are not codes: ${extra.join(', ')}`);
  assert.equal(documented.length, CODES.length);
  // Any heading that mentions a code but is not exactly "## CODE" is a typo waiting to happen.
  for (const line of text.split('\n')) {
    if (/^#+ .*HERALD_ERR_/.test(line)) assert.match(line, /^## HERALD_ERR_[A-Z0-9_]+$/, `malformed heading: ${line}`);
  }
});

test('each code section states its meaning, its retryable default (matching ERROR_CODES) and what to do', () => {
  const sections = docSections(readFileSync(DOC, 'utf8'));
  for (const code of CODES) {
    const body = sections.get(code)!.join('\n');
    const meaning = body.split('\n').find((l) => l.trim().length > 0 && !l.startsWith('**'));
    assert.ok(meaning && meaning.length > 20, `${code}: a paragraph saying what it means comes first`);
    const retry = /^\*\*Retryable by default:\*\* (yes|no)\b/m.exec(body);
    assert.ok(retry, `${code}: has a "**Retryable by default:** yes|no" line`);
    assert.equal(retry[1] === 'yes', ERROR_CODES[code].retryable, `${code}: the documented retryable default matches ERROR_CODES`);
    assert.match(body, /^\*\*What to do:\*\* \S/m, `${code}: has a "**What to do:**" line`);
  }
});

test('errors.md opens with the rules every code follows', () => {
  const text = readFileSync(DOC, 'utf8');
  const intro = text.slice(0, text.indexOf('\n## HERALD_ERR_'));
  assert.match(intro, /never reused/i);
  assert.match(intro, /isHeraldError/);
  assert.match(intro, /retryable/);
  assert.match(intro, /dead.letter/i);
});
