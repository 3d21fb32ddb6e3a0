/**
 * Redis key names, in one place. With the default prefix `herald`:
 *
 *   herald:<topic>:meta              hash   partitions (fixed at creation with HSETNX), format
 *   herald:<topic>:<p>               stream the partition's log; entry ids are `0-<offset>`
 *   herald:<topic>:groups:<p>        hash   group → committed offset of partition p
 *   herald:<topic>:marks:<p>         zset   retention time marks: member = an offset, score = a time it already existed
 *   herald:<topic>:dropped           hash   group → entries the hard cap deleted before the group committed them
 *   herald:~topics                   set    every topic created under the prefix (retention walks it)
 *   herald:~lease:<scope>:<resource> string `<epoch>|<owner>`, PX = the lease's time to live (absent: free or expired)
 *   herald:~epoch:<scope>:<resource> string `<epoch>|<owner>` of the last grant, `<epoch>|` once released (persistent)
 *   herald:~leases:<scope>           set    resources ever leased in the scope (for list())
 *   herald:~members:<scope>          zset   member → expiry (ms, server time)
 *   herald:~wake:<uuid>              stream one transport's doorbell (MAXLEN 1, expires when unused)
 *
 * Topic names are letters, digits, '.', '_' and '-', so `<topic>` can never contain ':' or
 * '~': a topic's keys never collide with another topic's or with the `~` keys. Lease scopes
 * and resources are arbitrary strings, so they are URI-encoded (no ':' left in them).
 */

export interface KeySpace {
  readonly prefix: string;
  meta(topic: string): string;
  stream(topic: string, partition: number): string;
  groups(topic: string, partition: number): string;
  marks(topic: string, partition: number): string;
  dropped(topic: string): string;
  topics(): string;
  lease(scope: string, resource: string): string;
  epoch(scope: string, resource: string): string;
  leaseIndex(scope: string): string;
  members(scope: string): string;
  doorbell(id: string): string;
}

export const DEFAULT_PREFIX = 'herald';

export function keySpace(prefix: string = DEFAULT_PREFIX): KeySpace {
  const enc = encodeURIComponent;
  return {
    prefix,
    meta: (topic) => `${prefix}:${topic}:meta`,
    stream: (topic, p) => `${prefix}:${topic}:${p}`,
    groups: (topic, p) => `${prefix}:${topic}:groups:${p}`,
    marks: (topic, p) => `${prefix}:${topic}:marks:${p}`,
    dropped: (topic) => `${prefix}:${topic}:dropped`,
    topics: () => `${prefix}:~topics`,
    lease: (scope, resource) => `${prefix}:~lease:${enc(scope)}:${enc(resource)}`,
    epoch: (scope, resource) => `${prefix}:~epoch:${enc(scope)}:${enc(resource)}`,
    leaseIndex: (scope) => `${prefix}:~leases:${enc(scope)}`,
    members: (scope) => `${prefix}:~members:${enc(scope)}`,
    doorbell: (id) => `${prefix}:~wake:${id}`,
  };
}

/** The lease scope core's LogSubscription uses for a (topic, group). */
export function logScope(topic: string, group: string): string {
  return `log:${topic}:${group}`;
}

/** The value a lease key holds and a fence is compared with. */
export function leaseToken(epoch: number, owner: string): string {
  return `${epoch}|${owner}`;
}

/** Stream entry id of an offset (Herald writes every entry as `0-<offset>`). */
export function entryId(offset: number): string {
  return `0-${offset}`;
}

/** Offset of a Herald stream entry id (`0-<n>`), or undefined for an id Herald did not write. */
export function offsetOf(id: string): number | undefined {
  if (id.length < 3 || id.charCodeAt(0) !== 48 /* 0 */ || id.charCodeAt(1) !== 45 /* - */) return undefined;
  const n = Number(id.slice(2));
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}
