/**
 * Counters and histograms for the per-message paths, registered in a prom-client `Registry`
 * as custom metrics. prom-client's own `inc`/`observe` hash and validate a label object on
 * every call (labelled children too); here a caller keeps the series object it got once per
 * label set and updates plain numbers — the exposition is built at scrape time.
 */
import type { Registry } from 'prom-client';

type Labels = Readonly<Record<string, string>>;

export interface CounterSeries {
  value: number;
}

export interface HistogramSeries {
  /** Per bucket, not cumulative; the last is +Inf. */
  readonly counts: Float64Array;
  sum: number;
  count: number;
}

type Tree<S> = Map<string, Tree<S> | S>;

/**
 * Label values → one series object, created once per label set by `make` (which gets the
 * values in order). `of(a, b, …)` takes as many values as the tree's depth (1 to 5): one Map
 * lookup per value on strings whose hashes V8 has cached, no key string built, nothing
 * allocated once the set exists. Shared by the Prometheus series below and the OpenTelemetry
 * path (otel-metrics.ts), whose series carry a prebuilt attributes object.
 */
export class SeriesTree<S> {
  #root: Tree<S> = new Map();
  constructor(
    readonly depth: number,
    private readonly make: (values: readonly string[]) => S,
  ) {
    if (!Number.isInteger(depth) || depth < 1 || depth > 5) throw new RangeError(`SeriesTree depth ${depth} (1 to 5)`);
  }
  of(a: string, b?: string, c?: string, d?: string, e?: string): S {
    const n = this.depth;
    let node: Tree<S> = this.#root;
    for (let i = 0; i < n - 1; i++) {
      const v = (i === 0 ? a : i === 1 ? b : i === 2 ? c : d)!;
      let next = node.get(v) as Tree<S> | undefined;
      if (!next) node.set(v, (next = new Map()));
      node = next;
    }
    const last = (n === 1 ? a : n === 2 ? b : n === 3 ? c : n === 4 ? d : e)!;
    let s = node.get(last) as S | undefined;
    if (s === undefined) {
      s = this.make([a, b, c, d, e].slice(0, n) as string[]);
      node.set(last, s);
    }
    return s;
  }
  clear(): void {
    this.#root = new Map();
  }
}

abstract class FastMetric<S> {
  readonly aggregator = 'sum';
  protected readonly series: { labels: Labels; s: S }[] = [];
  readonly #tree: SeriesTree<S>;
  constructor(
    readonly name: string,
    readonly help: string,
    registry: Registry,
    readonly labelNames: readonly string[],
  ) {
    this.#tree = new SeriesTree(labelNames.length, (values) => {
      const s = this.make();
      this.series.push({ labels: Object.fromEntries(labelNames.map((label, i) => [label, values[i]!])), s });
      return s;
    });
    registry.registerMetric(this as never);
  }
  /** The series of one label set, values in `labelNames` order (as many as there are names). */
  of(a: string, b?: string, c?: string, d?: string): S {
    return this.#tree.of(a, b, c, d);
  }
  reset(): void {
    this.series.length = 0;
    this.#tree.clear();
  }
  protected abstract make(): S;
}

export class FastCounter extends FastMetric<CounterSeries> {
  readonly type = 'counter';
  protected make(): CounterSeries {
    return { value: 0 };
  }
  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Labels; value: number }[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.series.map((e) => ({ labels: e.labels, value: e.s.value })) };
  }
}

export class FastHistogram extends FastMetric<HistogramSeries> {
  readonly type = 'histogram';
  readonly #bounds: readonly number[];
  constructor(name: string, help: string, registry: Registry, labelNames: readonly string[], bounds: readonly number[]) {
    super(name, help, registry, labelNames);
    this.#bounds = [...bounds].sort((a, b) => a - b);
  }
  protected make(): HistogramSeries {
    return { counts: new Float64Array(this.#bounds.length + 1), sum: 0, count: 0 };
  }
  observe(s: HistogramSeries, value: number): void {
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && value > b[i]!) i++;
    s.counts[i]!++;
    s.sum += value;
    s.count++;
  }
  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Labels; value: number; metricName: string }[] } {
    const values: { labels: Labels; value: number; metricName: string }[] = [];
    for (const { labels, s } of this.series) {
      let cumulative = 0;
      this.#bounds.forEach((le, i) => {
        cumulative += s.counts[i]!;
        values.push({ labels: { ...labels, le: String(le) }, value: cumulative, metricName: `${this.name}_bucket` });
      });
      values.push({ labels: { ...labels, le: '+Inf' }, value: s.count, metricName: `${this.name}_bucket` });
      values.push({ labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }
}
