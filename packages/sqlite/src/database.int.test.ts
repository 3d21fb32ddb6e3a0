import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { isHeraldError } from '@herald/core';
import { BUSY, openDatabase, SCHEMA_VERSION } from './database.ts';
import { tempDbPath } from './test-helpers.ts';

const cleanups: Array<() => void> = [];
after(() => {
  for (const c of cleanups) c();
});

describe('openDatabase', () => {
  it('opens in WAL mode with the requested synchronous level and busy timeout', () => {
    const { path, cleanup } = tempDbPath();
    cleanups.push(cleanup);
    const db = openDatabase({ path, synchronous: 'FULL', busyTimeoutMs: 1234 });
    assert.equal(db.db.pragma('journal_mode', { simple: true }), 'wal');
    assert.equal(db.db.pragma('synchronous', { simple: true }), 2); // FULL
    assert.equal(db.db.pragma('busy_timeout', { simple: true }), 1234);
    db.close();
    const normal = openDatabase({ path });
    assert.equal(normal.db.pragma('synchronous', { simple: true }), 1); // NORMAL
    normal.close();
  });

  it('migrates once, idempotently, and leaves PRAGMA user_version to the application', () => {
    const { path, cleanup } = tempDbPath();
    cleanups.push(cleanup);
    const a = openDatabase({ path });
    const b = openDatabase({ path });
    assert.equal(a.schemaVersion(), SCHEMA_VERSION);
    assert.equal(b.schemaVersion(), SCHEMA_VERSION);
    assert.equal(a.db.pragma('user_version', { simple: true }), 0);
    assert.equal(b.writeTransactions, 0, 'the second open found the schema current and wrote nothing');
    a.close();
    b.close();
  });

  it('refuses a file whose schema is newer than this code, with a clear typed error', () => {
    const { path, cleanup } = tempDbPath();
    cleanups.push(cleanup);
    const a = openDatabase({ path });
    a.db.prepare(`UPDATE herald_meta SET version = ? WHERE component = 'herald'`).run(SCHEMA_VERSION + 1);
    a.close();
    assert.throws(
      () => openDatabase({ path }),
      (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT') && e.message.includes(`schema version ${SCHEMA_VERSION + 1}`) && e.message.includes('upgrade'),
    );
  });

  it('immediateAsync waits for another connection’s write lock without blocking the event loop, then runs once', async () => {
    const { path, cleanup } = tempDbPath();
    cleanups.push(cleanup);
    const a = openDatabase({ path });
    const b = openDatabase({ path, busyTimeoutMs: 2000 });
    a.db.exec('BEGIN IMMEDIATE');
    let runs = 0;
    const pending = b.immediateAsync(() => {
      runs++;
      b.db.exec(`INSERT INTO herald_members VALUES ('s', 'async', 0)`);
      return 'written';
    });
    let ticks = 0;
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (++ticks === 5) {
          clearInterval(t);
          resolve();
        }
      }, 2);
    });
    assert.equal(runs, 0, 'nothing ran while the lock was held');
    assert.equal(ticks, 5, 'timers kept firing while the writer waited');
    a.db.exec('COMMIT');
    assert.equal(await pending, 'written');
    assert.equal(runs, 1);
    assert.equal(b.writeTransactions, 1);

    const c = openDatabase({ path, busyTimeoutMs: 30 });
    a.db.exec('BEGIN IMMEDIATE');
    const t0 = performance.now();
    await assert.rejects(
      c.immediateAsync(() => 1),
      (e) => isHeraldError(e, 'HERALD_ERR_STORAGE') && e.retryable && /busy/.test(e.message),
    );
    assert.ok(performance.now() - t0 >= 25);
    a.db.exec('ROLLBACK');
    assert.equal(await c.immediateAsync(() => 2), 2);
    for (const d of [a, b, c]) d.close();
  });

  it('tryImmediate answers BUSY at once while another connection holds the write lock (it never waits out busy_timeout)', () => {
    const { path, cleanup } = tempDbPath();
    cleanups.push(cleanup);
    const a = openDatabase({ path });
    const b = openDatabase({ path, busyTimeoutMs: 5000 }); // opens an already-migrated file: the usual second process
    a.db.exec('BEGIN IMMEDIATE');
    const t0 = performance.now();
    assert.equal(b.tryImmediate(() => 1), BUSY);
    const waited = performance.now() - t0;
    assert.ok(waited < 2500, `tryImmediate blocked ${Math.round(waited)} ms: busy_timeout was not lifted`);
    assert.equal(b.db.pragma('busy_timeout', { simple: true }), 5000, 'the timeout is restored afterwards');
    a.db.exec('ROLLBACK');
    assert.equal(b.tryImmediate(() => 2), 2);
    a.close();
    b.close();
  });

  it('rejects bad options', () => {
    assert.throws(() => openDatabase({ path: '' }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
    assert.throws(() => openDatabase({ path: 'x', synchronous: 'OFF' as 'FULL' }), (e) => isHeraldError(e, 'HERALD_ERR_INVALID_ARGUMENT'));
  });

  it('a write lock held by another connection past busyTimeoutMs is HERALD_ERR_STORAGE (retryable); use after close is HERALD_ERR_CLOSED', () => {
    const { path, cleanup } = tempDbPath();
    cleanups.push(cleanup);
    const a = openDatabase({ path });
    const b = openDatabase({ path, busyTimeoutMs: 50 });
    a.db.exec('BEGIN IMMEDIATE');
    assert.throws(
      () => b.immediate(() => b.db.exec(`INSERT INTO herald_members VALUES ('s', 'm', 0)`)),
      (e) => isHeraldError(e, 'HERALD_ERR_STORAGE') && e.retryable && /SQLITE_BUSY/.test(e.message),
    );
    a.db.exec('ROLLBACK');
    b.immediate(() => b.db.exec(`INSERT INTO herald_members VALUES ('s', 'm', 0)`));
    a.close();
    b.close();
    b.close();
    assert.throws(() => b.immediate(() => 1), (e) => isHeraldError(e, 'HERALD_ERR_CLOSED'));
  });
});
