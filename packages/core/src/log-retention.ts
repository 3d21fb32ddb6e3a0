/**
 * The retention decision for one partition of a table-backed log (the SQLite and PostgreSQL
 * transports), apart from the statements that read and delete: by age, records appended before
 * the cutoff go, but never past the slowest registered group; by count, whatever exceeds the cap
 * goes regardless, and each group that had not committed those records is charged with them.
 */

/** Whether a partition can have anything to trim (its groups need not be read otherwise). */
export function retentionDue(first: number, next: number, byAge: boolean, cap: number | undefined): boolean {
  return byAge || (cap !== undefined && next - first > cap);
}

export interface RetentionPlan {
  /** Delete records at offsets ≤ this (nothing when it is below the first record). */
  readonly upTo: number;
  /** Per group, records it had not committed that the cap removes: offsets in (after, upTo]. */
  readonly losses: readonly { readonly grp: string; readonly after: number; readonly upTo: number }[];
}

/**
 * `first`/`next`: the partition's first record and next offset; `young`: the first record
 * appended at or after the age cutoff (`next` when none is), undefined when age retention is off;
 * `cap`: records kept at most; `groups`: every registered group's committed offset.
 */
export function planRetention(input: {
  readonly first: number;
  readonly next: number;
  readonly young: number | undefined;
  readonly cap: number | undefined;
  readonly groups: readonly { readonly grp: string; readonly committed: number }[];
}): RetentionPlan {
  const { first, next, young, cap, groups } = input;
  let upTo = first - 1;
  if (young !== undefined) {
    let slowest = Number.POSITIVE_INFINITY;
    for (const g of groups) slowest = Math.min(slowest, g.committed);
    upTo = Math.max(upTo, Math.min(young - 1, slowest));
  }
  const losses: { grp: string; after: number; upTo: number }[] = [];
  if (cap !== undefined && next - Math.max(first, upTo + 1) > cap) {
    const forced = next - cap - 1;
    for (const g of groups) if (g.committed < forced) losses.push({ grp: g.grp, after: Math.max(g.committed, upTo), upTo: forced });
    upTo = forced;
  }
  return { upTo, losses };
}
