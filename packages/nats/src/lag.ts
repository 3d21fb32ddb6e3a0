/**
 * Consumer lag read from JetStream (`LagSource`), a read only: it lists streams and consumers
 * and gets single stored messages, never creates, pulls from, acks or updates anything.
 *
 * Where each number comes from, per (topic, group, partition):
 * - the group's consumer of that partition is its latest lease epoch's durable consumer
 *   (`<group>-<partition>-<epoch>-<nonce>`, see names.ts); groups are found from the consumers
 *   on the stream, so every process's groups appear, and stay after their members closed (the
 *   consumers are durable). A partition the group never read has no consumer and no entry.
 * - `committed`: that consumer's ack floor stream sequence (the position it was created at
 *   while it acked nothing: NATS 2.9 reports 0 until the first ack); '-1' for 0.
 * - `messages`: `num_pending` (not yet delivered, past the consumer's delivered position, on its
 *   filter subject) + `num_ack_pending` (delivered, not acked). Herald acks in log order up to
 *   its committed watermark, so that is every message after the ack floor.
 * - `oldestUnhandledAt`: the stored time (the stream leader's clock) of the first message on
 *   the partition's subject after the ack floor (STREAM.MSG.GET `next_by_subj`).
 * - `head`: the last sequence on the partition's subject: a caught-up group's ack floor when
 *   one has acked something, else STREAM.MSG.GET `last_by_subj`; '-1' when the subject is empty.
 *
 * Round trips: one stream list (or stream info for a `{ topic }` filter), one consumer list
 * page per stream (256 consumers), then, all pipelined at once, at most one message get per
 * partition for its head and one per lagging (group, partition) for its age. Message gets
 * carry the stored message, so they cost a payload each.
 *
 * A group whose name is too long to fit a consumer name (hashed, see `groupToken`) and too long
 * for the consumer's description is reported under its hashed token (`h_<40 hex>`) by an
 * unfiltered `lag()`; `lag({ group })` finds it under its name.
 */
import { HeraldError, type PartitionLag, TOPIC_NAME_RE } from '@herald/core';
import { type ConsumerInfo, JetStreamApiError, type JetStreamManager, type MsgRequest, type StreamInfo } from '@nats-io/jetstream';
import { groupToken, streamName, subjectOf, subjectsOf } from './names.ts';

export interface LagFilter {
  readonly group?: string;
  readonly topic?: string;
}

const STREAM_NOT_FOUND = 10059;
const CONSUMER_NAME_RE = /^([A-Za-z0-9_]+)-(\d+)-(\d+)-[A-Za-z0-9]+$/;
const HASHED_TOKEN_RE = /^h_[0-9a-f]{40}$/;

interface Entry {
  readonly token: string;
  readonly partition: number;
  readonly epoch: number;
  readonly created: number;
  readonly info: ConsumerInfo;
}

/** Reads the lag of every (topic, group, partition) under `prefix` that matches `filter`. */
export async function readLag(jsm: JetStreamManager, prefix: string, filter: LagFilter = {}): Promise<PartitionLag[]> {
  const { group, topic } = checkFilter(filter);
  const token = group === undefined ? undefined : groupToken(group);
  const streams: Array<{ topic: string; info: StreamInfo }> = [];
  if (topic !== undefined) {
    const info = await jsm.streams.info(streamName(prefix, topic)).catch((e: unknown) => {
      if (e instanceof JetStreamApiError && e.code === STREAM_NOT_FOUND) return undefined;
      throw e;
    });
    if (info) {
      if (topicOf(prefix, info) !== topic) {
        throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `stream ${info.config.name} exists but was not created by Herald for topic "${topic}"`, { details: { topic, stream: info.config.name } });
      }
      streams.push({ topic, info });
    }
  } else {
    for await (const info of jsm.streams.list(`${prefix}.>`)) {
      const t = topicOf(prefix, info);
      if (t !== undefined) streams.push({ topic: t, info });
    }
  }
  const perStream = await Promise.all(streams.map((s) => streamLag(jsm, prefix, s.topic, s.info, token, group)));
  const out = perStream.flat();
  out.sort((a, b) => cmp(a.topic, b.topic) || cmp(a.group, b.group) || a.partition - b.partition);
  return out;
}

/** One Herald topic on JetStream, as `readTopics` (and `NatsTransport.topics()`) reads it. */
export interface NatsTopicStats {
  readonly topic: string;
  /** Its stream (`<PREFIX>_<topic>`). */
  readonly stream: string;
  readonly partitions: number;
  /**
   * Messages ever published to the topic: the stream's last sequence. Only Herald writes the
   * stream (one subject per partition, de-duplicated publishes stored once) and sequences start
   * at 1, so it counts every message ever stored, and unlike `state.messages` it does not drop
   * when retention limits or a purge remove old messages. 0 for an empty stream.
   */
  readonly published: number;
  /** Messages stored now on each partition's subject (index = partition); these drop with retention or a purge. */
  readonly stored: readonly number[];
}

/**
 * Every Herald topic under `prefix` (or the one `filter.topic` names; none when it has no
 * stream) with its partition count and published and stored counts, sorted by topic. A read
 * only: one stream list, then one stream info per topic (with its subjects' counts); nothing is
 * created. A stream that holds the topic's name but was not made by Herald is
 * `HERALD_ERR_TOPIC_MISMATCH` for a `{ topic }` filter and left out of an unfiltered read.
 */
export async function readTopics(jsm: JetStreamManager, prefix: string, filter: { readonly topic?: string } = {}): Promise<NatsTopicStats[]> {
  const { topic } = checkFilter(filter);
  const names: Array<{ topic: string; stream: string }> = [];
  if (topic !== undefined) names.push({ topic, stream: streamName(prefix, topic) });
  else {
    for await (const info of jsm.streams.list(`${prefix}.>`)) {
      const t = topicOf(prefix, info);
      if (t !== undefined) names.push({ topic: t, stream: info.config.name });
    }
  }
  const read = await Promise.all(
    names.map(async ({ topic: t, stream }): Promise<NatsTopicStats | undefined> => {
      const info = await jsm.streams.info(stream, { subjects_filter: subjectsOf(prefix, t) }).catch((e: unknown) => {
        if (e instanceof JetStreamApiError && e.code === STREAM_NOT_FOUND) return undefined; // none, or deleted meanwhile
        throw e;
      });
      if (!info) return undefined;
      if (topicOf(prefix, info) !== t) {
        throw new HeraldError('HERALD_ERR_TOPIC_MISMATCH', `stream ${stream} exists but was not created by Herald for topic "${t}"`, { details: { topic: t, stream } });
      }
      const partitions = partitionsOf(info);
      const subjects = info.state.subjects ?? {};
      return { topic: t, stream, partitions, published: info.state.last_seq, stored: Array.from({ length: partitions }, (_, p) => subjects[subjectOf(prefix, t, p)] ?? 0) };
    }),
  );
  const out = read.filter((x): x is NatsTopicStats => x !== undefined);
  out.sort((a, b) => cmp(a.topic, b.topic));
  return out;
}

async function streamLag(jsm: JetStreamManager, prefix: string, topic: string, stream: StreamInfo, token: string | undefined, group: string | undefined): Promise<PartitionLag[]> {
  const name = stream.config.name;
  const partitions = partitionsOf(stream);
  // The latest epoch's consumer of each (group, partition), as a new owner would pick it.
  const latest = new Map<string, Entry>();
  try {
    for await (const info of jsm.consumers.list(name)) {
      const m = CONSUMER_NAME_RE.exec(info.name);
      if (!m) continue;
      const entry: Entry = { token: m[1]!, partition: Number(m[2]), epoch: Number(m[3]), created: Date.parse(info.created), info };
      if (entry.partition >= partitions || (token !== undefined && entry.token !== token)) continue;
      const key = `${entry.token}\u0000${entry.partition}`;
      const seen = latest.get(key);
      if (!seen || entry.epoch > seen.epoch || (entry.epoch === seen.epoch && entry.created > seen.created)) latest.set(key, entry);
    }
  } catch (e) {
    if (e instanceof JetStreamApiError && e.code === STREAM_NOT_FOUND) return []; // deleted meanwhile
    throw e;
  }
  const entries = [...latest.values()];
  // Heads, once per partition: a caught-up group that acked something has its ack floor on the
  // subject's last message; otherwise ask the stream.
  const known = new Map<number, number>();
  const wanted = new Set<number>();
  for (const e of entries) {
    wanted.add(e.partition);
    if (lagOf(e.info) === 0 && e.info.ack_floor.consumer_seq > 0) known.set(e.partition, Math.max(known.get(e.partition) ?? 0, e.info.ack_floor.stream_seq));
  }
  const heads = new Map<number, Promise<number>>();
  for (const p of wanted) {
    const k = known.get(p);
    heads.set(p, k !== undefined ? Promise.resolve(k) : jsm.streams.getMessage(name, { last_by_subj: subjectOf(prefix, topic, p) }).then((m) => m?.seq ?? 0));
  }
  return Promise.all(
    entries.map(async (e): Promise<PartitionLag> => {
      const floor = floorOf(e.info);
      const messages = lagOf(e.info);
      const oldest =
        messages === 0
          ? undefined
          : // NextMsgRequest is accepted by STREAM.MSG.GET (2.9+) though the client types it for direct gets only.
            jsm.streams.getMessage(name, { seq: floor + 1, next_by_subj: subjectOf(prefix, topic, e.partition) } as unknown as MsgRequest).then((m) => m?.time.getTime());
      const [head, oldestUnhandledAt] = await Promise.all([heads.get(e.partition)!, oldest]);
      return {
        topic,
        group: group ?? groupOf(e.token, e.info.config.description),
        partition: e.partition,
        head: head > 0 ? String(head) : '-1',
        committed: floor > 0 ? String(floor) : '-1',
        messages,
        oldestUnhandledAt: messages === 0 ? undefined : oldestUnhandledAt,
      };
    }),
  );
}

/** Messages after the ack floor: not yet delivered plus delivered and unacked. */
function lagOf(info: ConsumerInfo): number {
  return info.num_pending + info.num_ack_pending;
}

/** The consumer's ack floor; NATS 2.9 reports 0 until the first ack, when it is still where it was created. */
function floorOf(info: ConsumerInfo): number {
  return info.ack_floor.consumer_seq > 0 ? info.ack_floor.stream_seq : Math.max(0, (info.config.opt_start_seq ?? 1) - 1);
}

/** The Herald topic a stream holds, or undefined when Herald did not create it (under this prefix). */
function topicOf(prefix: string, info: StreamInfo): string | undefined {
  const subjects = info.config.subjects ?? [];
  const head = `${prefix}.`;
  for (const s of subjects) {
    if (!s.startsWith(head) || !s.endsWith('.*')) continue;
    const topic = s.slice(head.length, -2).replaceAll('~', '.');
    if (TOPIC_NAME_RE.test(topic) && streamName(prefix, topic) === info.config.name && subjectsOf(prefix, topic) === s && /partitions=\d+/.test(info.config.description ?? '')) return topic;
  }
  return undefined;
}

function partitionsOf(info: StreamInfo): number {
  const m = /partitions=(\d+)/.exec(info.config.description ?? '');
  return m ? Number(m[1]) : 0;
}

/**
 * The group a consumer reads for: from its description (`herald group "<json>" partition …`)
 * when it holds the whole name, else decoded from the name's token (injective, see
 * `groupToken`); a hashed token stays as it is.
 */
function groupOf(token: string, description: string | undefined): string {
  const m = /^herald group (".*") partition \d+ epoch /s.exec(description ?? '');
  if (m) {
    try {
      const g: unknown = JSON.parse(m[1]!);
      if (typeof g === 'string' && groupToken(g) === token) return g;
    } catch {
      // cut at 200 characters: decode the token instead
    }
  }
  if (HASHED_TOKEN_RE.test(token)) return token;
  let out = '';
  for (let i = 0; i < token.length; ) {
    if (token[i] === '_') {
      out += String.fromCharCode(Number.parseInt(token.slice(i + 1, i + 5), 16));
      i += 5;
    } else out += token[i++];
  }
  return out;
}

function checkFilter(filter: LagFilter): LagFilter {
  if (typeof filter !== 'object' || filter === null) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `lag filter must be an object with optional group and topic (got ${String(filter)})`);
  const { group, topic } = filter;
  if (group !== undefined && (typeof group !== 'string' || group.length === 0)) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `lag filter group must be a non-empty string (got ${JSON.stringify(group)})`);
  }
  if (topic !== undefined && (typeof topic !== 'string' || !TOPIC_NAME_RE.test(topic))) {
    throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `lag filter topic must be 1–200 of letters, digits, '.', '_', '-' (got ${JSON.stringify(topic)})`);
  }
  return { ...(group !== undefined ? { group } : {}), ...(topic !== undefined ? { topic } : {}) };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
