/**
 * The tables of Herald's PostgreSQL backend, as migration components (see migrations.ts).
 * Each list only grows: a released migration is never edited, a change is a new entry.
 */
import { type PgComponent, registerComponent } from './migrations.ts';

/**
 * `herald_log`: the transport's partitioned log, group offsets, leases, members, dead letters.
 * Offsets are assigned from the per-partition counter row `herald_partitions.next_offset`,
 * which a publish locks until it commits: offsets of one partition become visible in order
 * (see docs/explanation/postgres-global-order.md).
 */
export const LOG_COMPONENT: PgComponent = registerComponent({
  name: 'herald_log',
  migrations: [
    `
    CREATE TABLE IF NOT EXISTS herald_topics (
      id serial PRIMARY KEY,
      name text NOT NULL UNIQUE,
      partitions integer NOT NULL,
      created_at bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS herald_partitions (
      topic_id integer NOT NULL,
      partition integer NOT NULL,
      next_offset bigint NOT NULL,
      PRIMARY KEY (topic_id, partition)
    );
    CREATE TABLE IF NOT EXISTS herald_log (
      topic_id integer NOT NULL,
      partition integer NOT NULL,
      "offset" bigint NOT NULL,
      key text,
      appended_at bigint NOT NULL,
      envelope text NOT NULL,
      PRIMARY KEY (topic_id, partition, "offset")
    );
    -- committed offset per (topic, group, partition); -1 = registered, nothing committed yet
    CREATE TABLE IF NOT EXISTS herald_offsets (
      topic_id integer NOT NULL,
      grp text NOT NULL,
      partition integer NOT NULL,
      committed bigint NOT NULL,
      updated_at bigint NOT NULL,
      PRIMARY KEY (topic_id, grp, partition)
    );
    CREATE INDEX IF NOT EXISTS herald_offsets_by_partition ON herald_offsets (topic_id, partition, committed);
    CREATE TABLE IF NOT EXISTS herald_retention_dropped (
      topic_id integer NOT NULL,
      grp text NOT NULL,
      dropped bigint NOT NULL,
      PRIMARY KEY (topic_id, grp)
    );
    CREATE TABLE IF NOT EXISTS herald_leases (
      scope text NOT NULL,
      resource text NOT NULL,
      owner text,
      epoch bigint NOT NULL,
      expires_at bigint NOT NULL,
      PRIMARY KEY (scope, resource)
    );
    CREATE TABLE IF NOT EXISTS herald_members (
      scope text NOT NULL,
      member text NOT NULL,
      expires_at bigint NOT NULL,
      PRIMARY KEY (scope, member)
    );
    CREATE TABLE IF NOT EXISTS herald_dead_letters (
      id bigserial PRIMARY KEY,
      grp text NOT NULL,
      topic text NOT NULL,
      partition integer NOT NULL,
      key text,
      handler text NOT NULL,
      event_id text,
      type text,
      status text NOT NULL CHECK (status IN ('dead', 'parked', 'redrive')),
      parked_behind text,
      envelope text,
      raw text NOT NULL,
      position text NOT NULL,
      error_code text,
      error_message text NOT NULL,
      error_stack text,
      attempts integer NOT NULL,
      first_failed_at bigint NOT NULL,
      last_failed_at bigint NOT NULL
    );
    CREATE INDEX IF NOT EXISTS herald_dead_letters_by_key ON herald_dead_letters (grp, topic, key, id);
    CREATE INDEX IF NOT EXISTS herald_dead_letters_by_status ON herald_dead_letters (status, grp, topic, partition, id);
    CREATE TABLE IF NOT EXISTS herald_parked_keys (
      seq bigserial PRIMARY KEY,
      grp text NOT NULL,
      topic text NOT NULL,
      key text NOT NULL,
      partition integer NOT NULL,
      draining boolean NOT NULL DEFAULT false,
      parked_by bigint,
      UNIQUE (grp, topic, key)
    );
    `,
  ],
});

/**
 * `herald_eventstore`. Global positions come from `herald_es_position_seq`, reserved only by
 * `herald_es_reserve(n)`, which assigns the transaction its id (`pg_current_xact_id()`) and
 * takes the n positions inside one short critical section (a session advisory lock): across
 * appends, transaction-id order is position order. Each event row records its transaction id
 * (`tx_id`); global readers read only rows whose `tx_id` is below the oldest transaction still
 * in flight (`pg_snapshot_xmin(pg_current_snapshot())`). The proof is in
 * docs/explanation/postgres-global-order.md.
 */
export const EVENT_STORE_COMPONENT: PgComponent = registerComponent({
  name: 'herald_eventstore',
  migrations: [
    `
    CREATE SEQUENCE IF NOT EXISTS herald_es_position_seq AS bigint MINVALUE 1 START WITH 1 CACHE 1;
    CREATE TABLE IF NOT EXISTS herald_es_events (
      position bigint PRIMARY KEY,
      tx_id xid8 NOT NULL DEFAULT pg_current_xact_id(),
      stream_id text NOT NULL,
      version integer NOT NULL,
      event_id text NOT NULL,
      type text NOT NULL,
      schema_version integer NOT NULL,
      data text NOT NULL,
      metadata text,
      correlation_id text,
      causation_id text,
      recorded_at bigint NOT NULL,
      category text NOT NULL
    );
    CREATE UNIQUE INDEX IF NOT EXISTS herald_es_events_by_stream ON herald_es_events (stream_id, version);
    CREATE UNIQUE INDEX IF NOT EXISTS herald_es_events_by_id ON herald_es_events (event_id);
    CREATE INDEX IF NOT EXISTS herald_es_events_by_category ON herald_es_events (category, position);
    -- one row per stream that ever had an append, metadata or a delete; state 0 live, 1 soft-deleted, 2 tombstoned
    CREATE TABLE IF NOT EXISTS herald_es_streams (
      stream_id text PRIMARY KEY,
      version integer NOT NULL DEFAULT 0,
      last_position bigint NOT NULL DEFAULT 0,
      state smallint NOT NULL DEFAULT 0,
      soft_deleted_before integer NOT NULL DEFAULT 0,
      metadata text
    );
    -- the highest safe position a tombstone deleted: the head never goes back
    CREATE TABLE IF NOT EXISTS herald_es_head (
      id integer PRIMARY KEY CHECK (id = 1),
      deleted_high bigint NOT NULL
    );
    INSERT INTO herald_es_head (id, deleted_high) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
    CREATE TABLE IF NOT EXISTS herald_es_checkpoints (
      name text PRIMARY KEY,
      position bigint NOT NULL,
      updated_at bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS herald_es_snapshots (
      stream_id text PRIMARY KEY,
      version integer NOT NULL,
      schema_version integer NOT NULL,
      truncate_before integer NOT NULL,
      state text NOT NULL,
      saved_at bigint NOT NULL
    );
    CREATE TABLE IF NOT EXISTS herald_es_projections (
      name text PRIMARY KEY,
      kind text NOT NULL,
      position bigint NOT NULL,
      generation integer NOT NULL,
      status text NOT NULL,
      rebuild_position bigint,
      tables text NOT NULL,
      error text,
      updated_at bigint NOT NULL
    );
    CREATE OR REPLACE FUNCTION herald_es_reserve(n integer) RETURNS bigint LANGUAGE plpgsql AS $fn$
    DECLARE
      k bigint := hashtext('herald.es.reserve:' || current_schema());
      first bigint;
    BEGIN
      IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'herald: event-store positions must be reserved before the transaction''s first write (its transaction id is already assigned)'
          USING ERRCODE = 'HRE01';
      END IF;
      PERFORM pg_advisory_lock(k);
      BEGIN
        PERFORM pg_current_xact_id();
        first := nextval('herald_es_position_seq');
        IF n > 1 THEN
          PERFORM setval('herald_es_position_seq', first + n - 1);
        END IF;
      EXCEPTION WHEN OTHERS THEN
        PERFORM pg_advisory_unlock(k);
        RAISE;
      END;
      PERFORM pg_advisory_unlock(k);
      RETURN first;
    END
    $fn$;
    -- aborts the statement (and its implicit transaction) that calls it: a group commit whose guard found a stream moved by another process
    CREATE OR REPLACE FUNCTION herald_es_raced() RETURNS bigint LANGUAGE plpgsql AS $fn$
    BEGIN
      RAISE EXCEPTION 'herald: a stream of this append batch was moved by another writer; the batch is decided again' USING ERRCODE = 'HRE02';
    END
    $fn$;
    `,
    // 2: the reservation also releases its session lock when the statement is cancelled (statement_timeout)
    // between taking and releasing it: WHEN OTHERS does not catch query_canceled.
    `
    CREATE OR REPLACE FUNCTION herald_es_reserve(n integer) RETURNS bigint LANGUAGE plpgsql AS $fn$
    DECLARE
      k bigint := hashtext('herald.es.reserve:' || current_schema());
      first bigint;
    BEGIN
      IF pg_current_xact_id_if_assigned() IS NOT NULL THEN
        RAISE EXCEPTION 'herald: event-store positions must be reserved before the transaction''s first write (its transaction id is already assigned)'
          USING ERRCODE = 'HRE01';
      END IF;
      PERFORM pg_advisory_lock(k);
      BEGIN
        PERFORM pg_current_xact_id();
        first := nextval('herald_es_position_seq');
        IF n > 1 THEN
          PERFORM setval('herald_es_position_seq', first + n - 1);
        END IF;
      EXCEPTION WHEN query_canceled OR others THEN
        PERFORM pg_advisory_unlock(k);
        RAISE;
      END;
      PERFORM pg_advisory_unlock(k);
      RETURN first;
    END
    $fn$;
    `,
  ],
});

/**
 * `herald_outbox`: the outbox, the scheduled messages and the inbox of `PostgresUnitOfWork`.
 * An outbox row's `id` is `txid * 10^6 + n` (`txid` = `pg_current_xact_id()` of the writing
 * transaction, n its 0-based row number in that transaction): relays read only ids below
 * `pg_snapshot_xmin(pg_current_snapshot()) * 10^6`, i.e. rows of transactions that ended, so a
 * row committed later always gets an id above every id a relay has already read (see
 * outbox-store.ts and docs/explanation/postgres-global-order.md). "Sent" is a watermark per
 * partition (`herald_outbox_marks`, newest mark wins).
 */
export const OUTBOX_COMPONENT: PgComponent = registerComponent({
  name: 'herald_outbox',
  migrations: [
    `
    CREATE TABLE IF NOT EXISTS herald_outbox_settings (
      id integer PRIMARY KEY CHECK (id = 1),
      partitions integer NOT NULL
    );
    CREATE TABLE IF NOT EXISTS herald_outbox (
      id numeric(40, 0) PRIMARY KEY,
      partition integer NOT NULL,
      topic text NOT NULL,
      key text,
      envelope text NOT NULL,
      created_at bigint NOT NULL
    );
    CREATE INDEX IF NOT EXISTS herald_outbox_by_partition ON herald_outbox (partition, id);
    CREATE TABLE IF NOT EXISTS herald_outbox_marks (
      partition integer NOT NULL,
      upto numeric(40, 0) NOT NULL,
      sent_at bigint NOT NULL,
      PRIMARY KEY (partition, upto)
    );
    CREATE TABLE IF NOT EXISTS herald_scheduled (
      id text PRIMARY KEY,
      topic text NOT NULL,
      key text,
      envelope text NOT NULL,
      deliver_at bigint NOT NULL,
      created_at bigint NOT NULL
    );
    CREATE INDEX IF NOT EXISTS herald_scheduled_by_time ON herald_scheduled (deliver_at, id);
    CREATE TABLE IF NOT EXISTS herald_inbox (
      grp text NOT NULL,
      handler text NOT NULL,
      source text NOT NULL,
      id text NOT NULL,
      handled_at bigint NOT NULL,
      PRIMARY KEY (grp, handler, source, id)
    );
    CREATE INDEX IF NOT EXISTS herald_inbox_by_time ON herald_inbox (handled_at);
    `,
    // 2: the handler attempt's duration (null when the key carried no start).
    `ALTER TABLE herald_inbox ADD COLUMN IF NOT EXISTS duration_ms bigint;`,
  ],
});

/**
 * `herald_sagas`: saga instances (revision = optimistic concurrency; `seq` orders listings and
 * is their cursor, fixed at insert) and their timelines (`seq` orders an instance's history).
 */
export const SAGA_COMPONENT: PgComponent = registerComponent({
  name: 'herald_sagas',
  migrations: [
    `
    CREATE TABLE IF NOT EXISTS herald_sagas (
      seq bigserial PRIMARY KEY,
      saga text NOT NULL,
      key text NOT NULL,
      instance_id text NOT NULL,
      status text NOT NULL,
      revision integer NOT NULL,
      body text NOT NULL,
      started_at bigint NOT NULL,
      updated_at bigint NOT NULL,
      UNIQUE (saga, key)
    );
    CREATE INDEX IF NOT EXISTS herald_sagas_by_status ON herald_sagas (status, seq);
    CREATE INDEX IF NOT EXISTS herald_sagas_by_saga_status ON herald_sagas (saga, status, seq);
    CREATE TABLE IF NOT EXISTS herald_saga_timeline (
      seq bigserial PRIMARY KEY,
      saga text NOT NULL,
      key text NOT NULL,
      instance_id text NOT NULL,
      entry text NOT NULL
    );
    CREATE INDEX IF NOT EXISTS herald_saga_timeline_by_instance ON herald_saga_timeline (saga, key, seq);
    `,
  ],
});
