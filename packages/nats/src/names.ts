/**
 * How Herald names map onto NATS names. Every mapping is injective, so two Herald names never
 * share a NATS name:
 *
 * - topic → one subject token: Herald topics are `[A-Za-z0-9._-]`; '.' (a NATS token separator)
 *   becomes '~', which a topic cannot contain. Subject of partition p: `<prefix>.<token>.<p>`.
 * - topic → stream `<PREFIX>_<token>` (stream names may hold neither '.' nor wildcards).
 * - group → consumer-name token: letters and digits are kept, every other UTF-16 unit becomes
 *   `_` + 4 hex digits. The partition's durable consumer is
 *   `<groupToken>-<partition>-<epoch>-<nonce>` ('-' never occurs in a group token).
 * - lease scopes, resources and member ids → base64url KV key tokens.
 */
import { createHash } from 'node:crypto';

export function topicToken(topic: string): string {
  return topic.replaceAll('.', '~');
}

export function streamName(prefix: string, topic: string): string {
  return `${prefix.toUpperCase()}_${topicToken(topic)}`;
}

export function subjectOf(prefix: string, topic: string, partition: number): string {
  return `${prefix}.${topicToken(topic)}.${partition}`;
}

export function subjectsOf(prefix: string, topic: string): string {
  return `${prefix}.${topicToken(topic)}.*`;
}

/** Consumer-name token for a group: injective, short enough for a file name (long groups are hashed). */
export function groupToken(group: string): string {
  let out = '';
  for (let i = 0; i < group.length; i++) {
    const c = group.charCodeAt(i);
    const ok = (c >= 48 && c <= 57) || (c >= 65 && c <= 90) || (c >= 97 && c <= 122);
    out += ok ? group[i] : `_${c.toString(16).padStart(4, '0')}`;
  }
  if (out.length > 120) out = `h_${createHash('sha256').update(group).digest('hex').slice(0, 40)}`;
  return out;
}

/** Prefix shared by every durable consumer of (group, partition), whatever its epoch. */
export function consumerPrefix(group: string, partition: number): string {
  return `${groupToken(group)}-${partition}-`;
}

/** Parses `<prefix><epoch>-<nonce>`; undefined when `name` is not one of (group, partition)'s consumers. */
export function parseConsumerName(name: string, prefix: string): { epoch: number; nonce: string } | undefined {
  if (!name.startsWith(prefix)) return undefined;
  const m = /^(\d+)-([A-Za-z0-9]+)$/.exec(name.slice(prefix.length));
  if (!m) return undefined;
  return { epoch: Number(m[1]), nonce: m[2]! };
}

/** A KV key token for any string (base64url, '_' for the empty string). */
export function keyToken(s: string): string {
  return s.length === 0 ? '_' : Buffer.from(s, 'utf8').toString('base64url');
}
