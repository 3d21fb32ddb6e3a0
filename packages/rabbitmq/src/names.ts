/**
 * Broker object names. Every name starts with the transport's namespace, then a kind letter,
 * then the parts, joined by ':'. Topic names and namespaces cannot contain ':', and a group
 * name only ever stands last before a partition number, so two different (kind, topic, group,
 * partition) tuples never share a name. AMQP short strings hold at most 255 bytes: a longer
 * name keeps its first 200 bytes and ends in a hash of the whole.
 */
import { createHash } from 'node:crypto';

const MAX_NAME_BYTES = 255;

function fit(name: string): string {
  if (Buffer.byteLength(name, 'utf8') <= MAX_NAME_BYTES) return name;
  const hash = createHash('sha256').update(name).digest('hex').slice(0, 32);
  let head = Buffer.from(name, 'utf8').subarray(0, 200).toString('utf8');
  // A cut through a multi-byte character leaves U+FFFD at the end; drop it.
  head = head.replace(/\uFFFD+$/, '');
  return `${head}~${hash}`;
}

/** Names of everything one namespace declares on the broker. */
export class Names {
  constructor(readonly namespace: string) {}

  /** Direct exchange of a topic; routing key = partition number. Its arguments name the alternate exchange. */
  topicExchange(topic: string): string {
    return fit(`${this.namespace}:t:${topic}`);
  }

  /** Fanout alternate exchange of a topic, and the bounded queue behind it (messages no group queue took). */
  unrouted(topic: string): string {
    return fit(`${this.namespace}:t:${topic}:unrouted`);
  }

  /** Empty classic queue whose `x-max-length` records the topic's partition count. */
  meta(topic: string): string {
    return fit(`${this.namespace}:t:${topic}:meta`);
  }

  /** Quorum queue of one (group, partition). */
  groupQueue(topic: string, group: string, partition: number): string {
    return fit(`${this.namespace}:g:${topic}:${group}:${partition}`);
  }

  /** Fanout exchange a group's members announce themselves on. */
  members(topic: string, group: string): string {
    return fit(`${this.namespace}:m:${topic}:${group}`);
  }

  /** Headers exchange of delayed redeliveries (one per namespace). */
  delayExchange(): string {
    return fit(`${this.namespace}:delay`);
  }

  /** Quorum queue holding delayed redeliveries of one delay bucket, ms. */
  delayQueue(bucketMs: number): string {
    return fit(`${this.namespace}:delay:${bucketMs}`);
  }
}

/** Namespaces: 1–64 characters of letters, digits, '.', '_', '-' (no ':'). */
export const NAMESPACE_RE = /^[A-Za-z0-9._-]{1,64}$/;
