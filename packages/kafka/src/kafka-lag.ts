/**
 * Consumer lag read from Kafka (`LagSource` of the Kafka transport), without joining any group.
 *
 * Per (topic, group, partition): `head` is the high watermark − 1, `committed` the group's
 * committed offset − 1 (Kafka commits the next offset to read; Herald positions name the last
 * handled record), `messages` the high watermark minus the committed offset (or minus the log
 * start when nothing is committed or retention deleted past it), and `oldestUnhandledAt` the
 * timestamp of the first record at or after the committed offset (the record's Kafka timestamp:
 * CreateTime, set by the producer, or LogAppendTime when the topic is so configured).
 *
 * Where the pairs come from: the groups this transport subscribed (known from the first
 * `subscribe()`, for as long as the transport lives), the groups the brokers list (ListGroups,
 * consumer protocol), the topics each group committed offsets on (OffsetFetch for all topics)
 * and the topics its members subscribe to (DescribeGroups). The librdkafka mock cluster has
 * neither ListGroups nor DescribeGroups, nor an all-topics OffsetFetch: there only this
 * transport's own groups and topics are found (measured on librdkafka 2.0.2's mock).
 *
 * Requests per call, none of them a group operation (nothing joins, commits or moves an offset):
 * ListGroups per broker (no group filter), one FindCoordinator per group (cached), one or two
 * OffsetFetch per group, DescribeGroups per coordinator, two ListOffsets per partition leader
 * (latest, earliest), and for record timestamps not already cached one Fetch per leader (plus a
 * one-partition Fetch per partition whose record did not fit in that first answer). Fetches
 * read as a replica-less client (replicaId −1), so they change nothing on the broker.
 *
 * Uses kafkajs' internal cluster (its lower-level broker requests) through the client's private
 * cluster factory: kafkajs 2.2 has no public API for a group-less single-record read.
 */
import kafkajs from 'kafkajs';
import type { Kafka as KafkaClient } from 'kafkajs';
import { HeraldError, type PartitionLag } from '@herald/core';

const { AssignerProtocol } = kafkajs;

export interface LagFilter {
  readonly group?: string;
  readonly topic?: string;
}

/** kafkajs' internal Broker: the requests used here (kafkajs 2.2 src/broker/index.js). */
interface RawBroker {
  offsetFetch(req: { groupId: string; topics: { topic: string; partitions: { partition: number }[] }[] }): Promise<{
    responses: { topic: string; partitions: { partition: number; offset: string }[] }[];
  }>;
  listGroups(): Promise<{ groups: { groupId: string; protocolType: string }[] }>;
  describeGroups(req: { groupIds: string[] }): Promise<{
    groups: { groupId: string; state: string; protocolType: string; members: { memberMetadata: Buffer }[] }[];
  }>;
  fetch(req: {
    replicaId: number;
    isolationLevel: number;
    maxWaitTime: number;
    minBytes: number;
    maxBytes: number;
    topics: { topic: string; partitions: { partition: number; fetchOffset: string; maxBytes: number }[] }[];
  }): Promise<{ responses: { topicName: string; partitions: { partition: number; messages: { offset: string; timestamp: string }[] }[] }[] }>;
}

/** kafkajs' internal Cluster: the calls used here (kafkajs 2.2 src/cluster/index.js). */
interface RawCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  refreshMetadata(): Promise<void>;
  refreshMetadataIfNecessary(): Promise<void>;
  addMultipleTargetTopics(topics: string[]): Promise<void>;
  metadata(): Promise<{ topicMetadata: { topic: string; partitionMetadata: unknown[] }[] }>;
  getNodeIds(): number[];
  findBroker(node: { nodeId: string }): Promise<RawBroker>;
  findGroupCoordinator(group: { groupId: string }): Promise<RawBroker>;
  findTopicPartitionMetadata(topic: string): { partitionId: number; leader: number }[];
  findLeaderForPartitions(topic: string, partitions: number[]): Record<string, number[]>;
  fetchTopicsOffset(
    topics: { topic: string; fromBeginning: boolean; partitions: { partition: number }[] }[],
  ): Promise<{ topic: string; partitions: { partition: number; offset: string }[] }[]>;
}

/** Record timestamps cached (topic, partition, offset → ms): offsets are immutable, the committed offset rarely moves between scrapes. */
const TIMESTAMP_CACHE = 4096;
/** Bytes asked per partition in the batched Fetch (a partition whose first batch is larger is fetched alone). */
const FETCH_PARTITION_BYTES = 64 * 1024;
const READ_UNCOMMITTED = 0;

export class KafkaLagReader {
  readonly #kafka: KafkaClient;
  readonly #localGroups: () => ReadonlyMap<string, ReadonlySet<string>>;
  #cluster: Promise<RawCluster> | undefined;
  #closed = false;
  /** undefined: not tried yet. */
  #canListGroups: boolean | undefined;
  #canDescribeGroups: boolean | undefined;
  readonly #timestamps = new Map<string, number>();
  /** Topics seen in the cluster metadata (topics are not deleted under a running Herald). */
  readonly #known = new Set<string>();
  readonly #inFlight = new Map<string, Promise<PartitionLag[]>>();
  /** group → its coordinator, until a read fails. */
  readonly #coordinators = new Map<string, Promise<RawBroker>>();

  constructor(kafka: KafkaClient, localGroups: () => ReadonlyMap<string, ReadonlySet<string>>) {
    this.#kafka = kafka;
    this.#localGroups = localGroups;
  }

  /** Concurrent calls with the same filter share one read. Rejects with HERALD_ERR_STORAGE when Kafka fails. */
  read(filter: LagFilter = {}): Promise<PartitionLag[]> {
    const key = `${filter.group ?? '\u0001'}\u0000${filter.topic ?? '\u0001'}`;
    let p = this.#inFlight.get(key);
    if (!p) {
      p = this.#read(filter)
        .catch((e: unknown) => {
          // A moved leader or coordinator: refresh for the next call, and report this one.
          this.#coordinators.clear();
          void this.#cluster?.then((c) => c.refreshMetadata()).catch(() => {});
          if (e instanceof HeraldError) throw e;
          throw new HeraldError('HERALD_ERR_STORAGE', `kafka consumer lag could not be read: ${(e as Error)?.message ?? String(e)}`, { cause: e });
        })
        .finally(() => this.#inFlight.delete(key));
      this.#inFlight.set(key, p);
    }
    return p;
  }

  /** Disconnects the lag reader's connections. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    const c = this.#cluster;
    this.#cluster = undefined;
    await c?.then((x) => x.disconnect()).catch(() => {});
  }

  async #read(filter: LagFilter): Promise<PartitionLag[]> {
    const cluster = await this.#clusterReady();
    const local = this.#localGroups();
    const groups = new Set<string>();
    if (filter.group !== undefined) groups.add(filter.group);
    else {
      for (const g of local.keys()) groups.add(g);
      for (const g of await this.#listGroups(cluster)) groups.add(g);
    }
    if (groups.size === 0) return [];

    // group → topic → partition → committed (next offset to read; -1: none)
    const committed = new Map<string, Map<string, Map<number, number>>>();
    const described = await this.#describeGroups(cluster, [...groups]);
    // A topic asked for by name is looked up by every group's commits on it too (a broker without an all-topics
    // OffsetFetch, like the mock, finds another client's group that way) — if it exists: a lag read creates nothing.
    const named = filter.topic !== undefined && (await this.#topicExists(cluster, filter.topic)) ? filter.topic : undefined;
    await Promise.all(
      [...groups].map(async (group) => {
        const coordinator = await this.#coordinator(cluster, group);
        const byTopic = new Map<string, Map<number, number>>();
        // All topics of the group (an empty list is sent as null from OffsetFetch v3 on).
        const all = await coordinator.offsetFetch({ groupId: group, topics: [] });
        addOffsets(byTopic, all.responses);
        const wanted = new Set<string>([...(local.get(group) ?? []), ...(described.get(group) ?? [])]);
        const missing = [...new Set([...wanted, ...(named === undefined ? [] : [named])])].filter(
          (t) => !byTopic.has(t) && (filter.topic === undefined || filter.topic === t),
        );
        if (missing.length > 0) {
          await cluster.addMultipleTargetTopics(missing);
          const topics = missing.map((topic) => ({ topic, partitions: cluster.findTopicPartitionMetadata(topic).map((p) => ({ partition: p.partitionId })) }));
          const some = await coordinator.offsetFetch({ groupId: group, topics });
          addOffsets(byTopic, some.responses);
        }
        for (const topic of [...byTopic.keys()]) {
          if (filter.topic !== undefined && topic !== filter.topic) byTopic.delete(topic);
          // A topic the group never committed on, never subscribed here, and no member reads: not this group's.
          else if (!wanted.has(topic) && [...byTopic.get(topic)!.values()].every((o) => o < 0)) byTopic.delete(topic);
        }
        if (byTopic.size > 0) committed.set(group, byTopic);
      }),
    );
    const topics = [...new Set([...committed.values()].flatMap((m) => [...m.keys()]))].sort();
    if (topics.length === 0) return [];

    await cluster.addMultipleTargetTopics(topics);
    await cluster.refreshMetadataIfNecessary();
    const request = (fromBeginning: boolean) =>
      topics.map((topic) => ({ topic, fromBeginning, partitions: cluster.findTopicPartitionMetadata(topic).map((p) => ({ partition: p.partitionId })) }));
    const [highs, lows] = await Promise.all([cluster.fetchTopicsOffset(request(false)), cluster.fetchTopicsOffset(request(true))]);
    const high = indexOffsets(highs);
    const low = indexOffsets(lows);

    interface Row {
      topic: string;
      group: string;
      partition: number;
      high: number;
      committed: number;
      start: number;
    }
    const rows: Row[] = [];
    for (const [group, byTopic] of [...committed].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      for (const topic of [...byTopic.keys()].sort()) {
        const offsets = byTopic.get(topic)!;
        for (const { partitionId: partition } of [...cluster.findTopicPartitionMetadata(topic)].sort((a, b) => a.partitionId - b.partitionId)) {
          const h = high.get(`${topic}\u0000${partition}`) ?? 0;
          const l = low.get(`${topic}\u0000${partition}`) ?? 0;
          const c = offsets.get(partition) ?? -1;
          rows.push({ topic, group, partition, high: h, committed: c, start: Math.min(h, Math.max(c < 0 ? l : c, l)) });
        }
      }
    }
    const times = await this.#timestampsAt(
      cluster,
      rows.filter((r) => r.start < r.high),
    );
    return rows.map((r) => ({
      topic: r.topic,
      group: r.group,
      partition: r.partition,
      head: String(r.high - 1),
      committed: String(r.committed <= 0 ? -1 : r.committed - 1),
      messages: r.high - r.start,
      oldestUnhandledAt: r.start < r.high ? times.get(tpo(r.topic, r.partition, r.start)) : undefined,
    }));
  }

  /** Timestamps of the first record at or after each (topic, partition, start): from the cache, else by Fetch. */
  async #timestampsAt(cluster: RawCluster, wanted: readonly { topic: string; partition: number; start: number }[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    const todo = new Map<string, { topic: string; partition: number; start: number }>();
    for (const w of wanted) {
      const k = tpo(w.topic, w.partition, w.start);
      const t = this.#timestamps.get(k);
      if (t !== undefined) out.set(k, t);
      else todo.set(k, w);
    }
    if (todo.size === 0) return out;
    // One Fetch per leader for every partition; a partition whose batch did not fit is fetched alone
    // (a broker always returns the first batch of the first partition, however small maxBytes is).
    const byLeader = new Map<string, { topic: string; partition: number; start: number }[]>();
    for (const w of todo.values()) {
      for (const [leader, ps] of Object.entries(cluster.findLeaderForPartitions(w.topic, [w.partition]))) {
        if (ps.length > 0) byLeader.set(leader, [...(byLeader.get(leader) ?? []), w]);
      }
    }
    await Promise.all(
      [...byLeader].map(async ([nodeId, items]) => {
        const broker = await cluster.findBroker({ nodeId });
        await this.#fetchTimes(broker, items, FETCH_PARTITION_BYTES, out);
        const left = items.filter((w) => !out.has(tpo(w.topic, w.partition, w.start)));
        for (const w of left) await this.#fetchTimes(broker, [w], 1, out);
      }),
    );
    return out;
  }

  async #fetchTimes(broker: RawBroker, items: readonly { topic: string; partition: number; start: number }[], partitionBytes: number, out: Map<string, number>): Promise<void> {
    const topics = new Map<string, { partition: number; fetchOffset: string; maxBytes: number }[]>();
    const startOf = new Map<string, number>();
    for (const w of items) {
      topics.set(w.topic, [...(topics.get(w.topic) ?? []), { partition: w.partition, fetchOffset: String(w.start), maxBytes: partitionBytes }]);
      startOf.set(`${w.topic}\u0000${w.partition}`, w.start);
    }
    const res = await broker.fetch({
      replicaId: -1,
      isolationLevel: READ_UNCOMMITTED,
      maxWaitTime: 0,
      minBytes: 0,
      maxBytes: Math.max(1, partitionBytes * items.length),
      topics: [...topics].map(([topic, partitions]) => ({ topic, partitions })),
    });
    for (const t of res.responses) {
      for (const p of t.partitions) {
        const start = startOf.get(`${t.topicName}\u0000${p.partition}`);
        if (start === undefined) continue;
        // The batch holding `start` may begin before it; every record from `start` on is cached.
        let first = true;
        for (const m of p.messages) {
          const offset = Number(m.offset);
          if (offset < start) continue;
          const ts = Number(m.timestamp);
          if (!Number.isFinite(ts)) continue;
          this.#remember(tpo(t.topicName, p.partition, offset), ts);
          if (first) {
            // Records between `start` and this one were compacted or are control records: the first one there is, is the oldest.
            out.set(tpo(t.topicName, p.partition, start), ts);
            this.#remember(tpo(t.topicName, p.partition, start), ts);
            first = false;
          }
        }
      }
    }
  }

  #remember(key: string, ts: number): void {
    if (this.#timestamps.has(key)) return;
    this.#timestamps.set(key, ts);
    if (this.#timestamps.size > TIMESTAMP_CACHE) this.#timestamps.delete(this.#timestamps.keys().next().value!);
  }

  /** Consumer groups the brokers list; [] when they have no ListGroups (the librdkafka mock). */
  async #listGroups(cluster: RawCluster): Promise<string[]> {
    if (this.#canListGroups === false) return [];
    await cluster.refreshMetadataIfNecessary();
    try {
      const answers = await Promise.all(cluster.getNodeIds().map(async (nodeId) => (await cluster.findBroker({ nodeId: String(nodeId) })).listGroups()));
      this.#canListGroups = true;
      return answers.flatMap((a) => a.groups.filter((g) => g.protocolType === 'consumer').map((g) => g.groupId));
    } catch (e) {
      if (!unsupported(e)) throw e;
      this.#canListGroups = false;
      return [];
    }
  }

  /** group → topics its current members subscribe to; empty when the brokers have no DescribeGroups (the librdkafka mock). */
  async #describeGroups(cluster: RawCluster, groups: readonly string[]): Promise<Map<string, Set<string>>> {
    const out = new Map<string, Set<string>>();
    if (this.#canDescribeGroups === false) return out;
    try {
      const byCoordinator = new Map<RawBroker, string[]>();
      for (const g of groups) {
        const c = await this.#coordinator(cluster, g);
        byCoordinator.set(c, [...(byCoordinator.get(c) ?? []), g]);
      }
      const answers = await Promise.all([...byCoordinator].map(([c, groupIds]) => c.describeGroups({ groupIds })));
      this.#canDescribeGroups = true;
      for (const a of answers) {
        for (const g of a.groups) {
          if (g.protocolType !== 'consumer') continue;
          const topics = new Set<string>();
          for (const m of g.members) {
            try {
              for (const t of AssignerProtocol.MemberMetadata.decode(m.memberMetadata)?.topics ?? []) topics.add(t);
            } catch {
              // Metadata of another assignor's format: its topics stay unknown here.
            }
          }
          if (topics.size > 0) out.set(g.groupId, topics);
        }
      }
      return out;
    } catch (e) {
      if (!unsupported(e)) throw e;
      this.#canDescribeGroups = false;
      return out;
    }
  }

  /** Whether `topic` is in the cluster's metadata: one all-topics Metadata request, which (unlike naming it) auto-creates nothing. */
  async #topicExists(cluster: RawCluster, topic: string): Promise<boolean> {
    if (this.#known.has(topic)) return true;
    const md = await cluster.metadata();
    for (const t of md.topicMetadata) if (t.partitionMetadata.length > 0) this.#known.add(t.topic);
    return this.#known.has(topic);
  }

  #coordinator(cluster: RawCluster, group: string): Promise<RawBroker> {
    let c = this.#coordinators.get(group);
    if (!c) {
      c = cluster.findGroupCoordinator({ groupId: group });
      c.catch(() => this.#coordinators.delete(group));
      this.#coordinators.set(group, c);
      if (this.#coordinators.size > TIMESTAMP_CACHE) this.#coordinators.delete(this.#coordinators.keys().next().value!);
    }
    return c;
  }

  #clusterReady(): Promise<RawCluster> {
    if (this.#closed) return Promise.reject(new HeraldError('HERALD_ERR_CLOSED', 'kafka transport is closed'));
    this.#cluster ??= (async () => {
      const sym = Object.getOwnPropertySymbols(this.#kafka).find((s) => s.description === 'private:Kafka:createCluster');
      const create = sym === undefined ? undefined : (this.#kafka as unknown as Record<symbol, unknown>)[sym];
      if (typeof create !== 'function') {
        throw new HeraldError('HERALD_ERR_STORAGE', 'kafka consumer lag needs kafkajs 2.2 (its internal cluster factory was not found)');
      }
      const cluster = (create as (o: object) => RawCluster)({ allowAutoTopicCreation: false });
      await cluster.connect();
      return cluster;
    })().catch((e: unknown) => {
      this.#cluster = undefined;
      throw e;
    });
    return this.#cluster;
  }
}

function tpo(topic: string, partition: number, offset: number): string {
  return `${topic}\u0000${partition}\u0000${offset}`;
}

function addOffsets(into: Map<string, Map<number, number>>, responses: readonly { topic: string; partitions: readonly { partition: number; offset: string }[] }[]): void {
  for (const r of responses) {
    let m = into.get(r.topic);
    if (!m) into.set(r.topic, (m = new Map()));
    for (const p of r.partitions) m.set(p.partition, Number(p.offset));
  }
}

function indexOffsets(topics: readonly { topic: string; partitions: readonly { partition: number; offset: string }[] }[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const t of topics) for (const p of t.partitions) out.set(`${t.topic}\u0000${p.partition}`, Number(p.offset));
  return out;
}

/** Whether a kafkajs error says the broker lacks the API (or version) asked for. */
function unsupported(e: unknown): boolean {
  const err = e as { name?: string; type?: string; message?: string };
  return err?.name === 'KafkaJSServerDoesNotSupportApiKey' || err?.type === 'UNSUPPORTED_VERSION' || /does not support the requested API/i.test(err?.message ?? '');
}
