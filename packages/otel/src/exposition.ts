/**
 * A strict parser of the Prometheus text exposition format (version 0.0.4), for tests and for
 * tools that scrape `/metrics` (the console, the CLI). It throws `HERALD_ERR_DECODE` naming the
 * line on anything the format does not allow: a bad metric or label name, a bad escape, a
 * value that is not a float, a sample of a family whose TYPE came later or differs, a
 * duplicate series, a histogram without its `+Inf` bucket or whose buckets are not cumulative.
 */
import { HeraldError } from '@herald/core';

export interface Sample {
  readonly name: string;
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface MetricFamily {
  readonly name: string;
  readonly type: 'counter' | 'gauge' | 'histogram' | 'summary' | 'untyped';
  readonly help: string | undefined;
  readonly samples: readonly Sample[];
}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

export function parsePrometheusText(text: string): Map<string, MetricFamily> {
  const families = new Map<string, { name: string; type: MetricFamily['type']; help: string | undefined; samples: Sample[] }>();
  const seen = new Set<string>();
  const fail = (n: number, why: string, line: string): never => {
    throw new HeraldError('HERALD_ERR_DECODE', `Prometheus text line ${n + 1}: ${why}: ${JSON.stringify(line.slice(0, 120))}`);
  };
  const lines = text.split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  lines.forEach((line, n) => {
    if (line.trim() === '') return;
    if (line.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+) ?(.*)$/.exec(line);
      if (!m) return; // a plain comment
      const [, kind, name, rest] = m as unknown as [string, string, string, string];
      if (!NAME_RE.test(name)) fail(n, 'bad metric name', line);
      let f = families.get(name);
      if (kind === 'TYPE') {
        if (!TYPES.has(rest)) fail(n, `unknown type "${rest}"`, line);
        if (f?.samples.length) fail(n, 'TYPE after samples of the family', line);
        if (f && f.type !== 'untyped') fail(n, 'second TYPE line', line);
        if (!f) families.set(name, (f = { name, type: 'untyped', help: undefined, samples: [] }));
        f.type = rest as MetricFamily['type'];
      } else {
        if (!f) families.set(name, (f = { name, type: 'untyped', help: undefined, samples: [] }));
        if (f.help !== undefined) fail(n, 'second HELP line', line);
        f.help = rest;
      }
      return;
    }
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{.*\})?\s+(\S+)(\s+-?\d+)?$/.exec(line);
    if (!m) return fail(n, 'not a sample line', line);
    const [, name, labelText, valueText] = m as unknown as [string, string, string | undefined, string];
    const labels = labelText === undefined ? {} : parseLabels(labelText.slice(1, -1), (why) => fail(n, why, line));
    const value = parseValue(valueText);
    if (value === undefined) fail(n, `value "${valueText}" is not a float`, line);
    const family = familyOf(name, families);
    if (!family) fail(n, 'sample before its TYPE line (or of no declared family)', line);
    if (family!.type === 'histogram' && name.endsWith('_bucket') && labels.le === undefined) fail(n, 'histogram bucket without "le"', line);
    const series = `${name}${JSON.stringify(Object.entries(labels).sort())}`;
    if (seen.has(series)) fail(n, 'duplicate series', line);
    seen.add(series);
    family!.samples.push({ name, labels, value: value! });
  });
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f);
  return families as Map<string, MetricFamily>;
}

function familyOf(sample: string, families: Map<string, { type: MetricFamily['type']; samples: Sample[] } & { name: string; help: string | undefined }>) {
  const direct = families.get(sample);
  if (direct) return direct;
  for (const suffix of ['_bucket', '_sum', '_count']) {
    if (!sample.endsWith(suffix)) continue;
    const f = families.get(sample.slice(0, -suffix.length));
    if (f && (f.type === 'histogram' || f.type === 'summary')) return f;
  }
  return undefined;
}

function parseLabels(text: string, fail: (why: string) => never): Record<string, string> {
  const labels: Record<string, string> = {};
  let i = 0;
  while (i < text.length) {
    const eq = text.indexOf('=', i);
    if (eq < 0) fail('label without "="');
    const name = text.slice(i, eq).trim();
    if (!LABEL_RE.test(name)) fail(`bad label name "${name}"`);
    if (Object.hasOwn(labels, name)) fail(`label "${name}" twice`);
    if (text[eq + 1] !== '"') fail(`label "${name}" value not quoted`);
    let j = eq + 2;
    let value = '';
    for (;;) {
      const c = text[j];
      if (c === undefined) fail(`label "${name}" value not closed`);
      if (c === '"') break;
      if (c === '\\') {
        const e = text[j + 1];
        if (e === 'n') value += '\n';
        else if (e === '\\' || e === '"') value += e;
        else fail(`bad escape "\\${e ?? ''}" in label "${name}"`);
        j += 2;
        continue;
      }
      if (c === '\n') fail('newline in a label value');
      value += c;
      j++;
    }
    labels[name] = value;
    i = j + 1;
    if (text[i] === ',') i++;
    else if (i < text.length) fail('labels not separated by ","');
  }
  return labels;
}

function parseValue(t: string): number | undefined {
  if (t === '+Inf' || t === 'Inf') return Number.POSITIVE_INFINITY;
  if (t === '-Inf') return Number.NEGATIVE_INFINITY;
  if (t === 'NaN') return Number.NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(t)) return undefined;
  return Number(t);
}

function checkHistogram(f: MetricFamily): void {
  const groups = new Map<string, { buckets: [number, number][]; count: number | undefined }>();
  for (const s of f.samples) {
    const { le, ...rest } = s.labels;
    const key = JSON.stringify(Object.entries(rest).sort());
    let g = groups.get(key);
    if (!g) groups.set(key, (g = { buckets: [], count: undefined }));
    if (s.name === `${f.name}_bucket`) g.buckets.push([parseValue(le!) ?? Number.NaN, s.value]);
    else if (s.name === `${f.name}_count`) g.count = s.value;
  }
  for (const [key, g] of groups) {
    const sorted = g.buckets.sort((a, b) => a[0] - b[0]);
    const inf = sorted[sorted.length - 1];
    if (!inf || inf[0] !== Number.POSITIVE_INFINITY) throw new HeraldError('HERALD_ERR_DECODE', `histogram ${f.name}${key} has no +Inf bucket`);
    for (let i = 1; i < sorted.length; i++) {
      if (sorted[i]![1] < sorted[i - 1]![1]) throw new HeraldError('HERALD_ERR_DECODE', `histogram ${f.name}${key}: buckets are not cumulative`);
    }
    if (g.count !== undefined && g.count !== inf[1]) throw new HeraldError('HERALD_ERR_DECODE', `histogram ${f.name}${key}: _count ${g.count} differs from the +Inf bucket ${inf[1]}`);
  }
}
