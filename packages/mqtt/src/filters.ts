/**
 * MQTT topic filters: validation and matching (MQTT 5.0 §4.7), and the bridge's default
 * reading of a device topic — which level is the device id, what the event type is.
 */

/** What a filter's wildcards matched in a topic: one level per `+`, the remaining levels for `#`. */
export interface FilterMatch {
  readonly filter: string;
  /** Levels matched by each `+`, in order. */
  readonly plus: readonly string[];
  /** Index in the topic's levels of each `+` match. */
  readonly plusAt: readonly number[];
  /** Levels matched by a trailing `#` (possibly none), or undefined when the filter has no `#`. */
  readonly hash: readonly string[] | undefined;
  /** Index in the topic's levels where the `#` match starts. */
  readonly hashAt: number;
}

/** Why `filter` is not a valid MQTT topic filter, or undefined when it is. */
export function filterProblem(filter: string): string | undefined {
  if (typeof filter !== 'string' || filter.length === 0) return 'a topic filter must be a non-empty string';
  if (filter.includes('\u0000')) return `topic filter ${JSON.stringify(filter)} contains a NUL character`;
  if (Buffer.byteLength(filter, 'utf8') > 65535) return 'a topic filter is at most 65535 bytes';
  const levels = filter.split('/');
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!;
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return `topic filter ${JSON.stringify(filter)}: '#' must be a whole level and the last one`;
    if (l.includes('+') && l !== '+') return `topic filter ${JSON.stringify(filter)}: '+' must be a whole level`;
  }
  if (filter.startsWith('$share/')) return `topic filter ${JSON.stringify(filter)}: give the plain filter and the group as shareGroup, not a $share/ filter`;
  return undefined;
}

/** Why `topic` is not a valid MQTT topic name (no wildcards), or undefined when it is. */
export function topicProblem(topic: string): string | undefined {
  if (typeof topic !== 'string' || topic.length === 0) return 'a topic name must be a non-empty string';
  if (/[+#\u0000]/.test(topic)) return `topic name ${JSON.stringify(topic)} must not contain '+', '#' or NUL`;
  if (Buffer.byteLength(topic, 'utf8') > 65535) return 'a topic name is at most 65535 bytes';
  return undefined;
}

/**
 * Matches `topic` against `filter` with MQTT's rules: `+` is exactly one level, `#` any
 * number of levels including none (so `a/#` matches `a`), and a filter starting with a
 * wildcard does not match topics starting with `$`.
 */
export function matchFilter(filter: string, topic: string): FilterMatch | undefined {
  if (topic.startsWith('$') && (filter.startsWith('+') || filter.startsWith('#'))) return undefined;
  const f = filter.split('/');
  const t = topic.split('/');
  const plus: string[] = [];
  const plusAt: number[] = [];
  for (let i = 0; i < f.length; i++) {
    const fl = f[i]!;
    if (fl === '#') return { filter, plus, plusAt, hash: t.slice(i), hashAt: i };
    if (i >= t.length) return undefined;
    if (fl === '+') {
      plus.push(t[i]!);
      plusAt.push(i);
    } else if (fl !== t[i]) return undefined;
  }
  if (t.length !== f.length) return undefined;
  return { filter, plus, plusAt, hash: undefined, hashAt: -1 };
}

/** The first of `filters` that matches `topic`. */
export function firstMatch(filters: readonly string[], topic: string): FilterMatch | undefined {
  for (const f of filters) {
    const m = matchFilter(f, topic);
    if (m) return m;
  }
  return undefined;
}

/**
 * The topic level that names the device: the level matched by the filter's first `+`, else
 * the first level matched by `#`. Undefined when the filter has no wildcard that matched one.
 */
export function deviceLevel(match: FilterMatch): number | undefined {
  if (match.plusAt.length > 0) return match.plusAt[0];
  if (match.hash !== undefined && match.hash.length > 0) return match.hashAt;
  return undefined;
}

/**
 * The default device id of a topic: the device level (see `deviceLevel`) of the first filter
 * that matches; the whole topic when no filter matches or none has a wildcard level.
 *   devices/+/telemetry, devices/d7/telemetry → d7
 */
export function defaultDeviceId(filters: readonly string[], topic: string): string {
  const m = firstMatch(filters, topic);
  const at = m ? deviceLevel(m) : undefined;
  return at === undefined ? topic : topic.split('/')[at]!;
}

/**
 * The default event type of a topic: its levels without the device level, joined by dots
 * (`devices/d7/telemetry` → `devices.telemetry`); `mqtt.message` when nothing is left.
 */
export function defaultType(filters: readonly string[], topic: string): string {
  const m = firstMatch(filters, topic);
  const at = m ? deviceLevel(m) : undefined;
  const levels = topic.split('/').filter((_, i) => i !== at);
  const type = levels.join('.');
  return type.length > 0 && type.replaceAll('.', '').length > 0 ? type : 'mqtt.message';
}
