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

abstract class FastMetric<S> {
  readonly aggregator = 'sum';
  protected readonly series: { labels: Labels; s: S }[] = [];
  #tree: Tree<S> = new Map();
  constructor(
    readonly name: string,
    readonly help: string,
    registry: Registry,
    readonly labelNames: readonly string[],
  ) {
    registry.registerMetric(this as never);
  }
  /**
   * The series of one label set, values in `labelNames` order (as many as there are names).
   * One Map lookup per label on strings whose hashes V8 has cached: no key string is built.
   */
  of(a: string, b?: string, c?: string, d?: string): S {
    const n = this.labelNames.length;
    let node: Tree<S> = this.#tree;
    for (let i = 0; i < n - 1; i++) {
      const v = (i === 0 ? a : i === 1 ? b : c)!;
      let next = node.get(v) as Tree<S> | undefined;
      if (!next) node.set(v, (next = new Map()));
      node = next;
    }
    const last = (n === 1 ? a : n === 2 ? b : n === 3 ? c : d)!;
    let s = node.get(last) as S | undefined;
    if (s === undefined) {
      s = this.make();
      node.set(last, s);
      const values = [a, b, c, d];
      this.series.push({ labels: Object.fromEntries(this.labelNames.map((name, i) => [name, values[i]!])), s });
    }
    return s;
  }
  reset(): void {
    this.series.length = 0;
    this.#tree = new Map();
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
