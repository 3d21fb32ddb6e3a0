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

abstract class FastMetric<S> {
  readonly aggregator = 'sum';
  protected readonly series = new Map<string, { labels: Labels; s: S }>();
  constructor(
    readonly name: string,
    readonly help: string,
    registry: Registry,
  ) {
    registry.registerMetric(this as never);
  }
  /** The series of one label set; `labels` is called only the first time `key` is seen. */
  of(key: string, labels: () => Labels): S {
    let e = this.series.get(key);
    if (!e) this.series.set(key, (e = { labels: labels(), s: this.make() }));
    return e.s;
  }
  reset(): void {
    this.series.clear();
  }
  protected abstract make(): S;
}

export class FastCounter extends FastMetric<CounterSeries> {
  readonly type = 'counter';
  protected make(): CounterSeries {
    return { value: 0 };
  }
  get(): { name: string; help: string; type: string; aggregator: string; values: { labels: Labels; value: number }[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: [...this.series.values()].map((e) => ({ labels: e.labels, value: e.s.value })) };
  }
}

export class FastHistogram extends FastMetric<HistogramSeries> {
  readonly type = 'histogram';
  readonly #bounds: readonly number[];
  constructor(name: string, help: string, registry: Registry, bounds: readonly number[]) {
    super(name, help, registry);
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
    for (const { labels, s } of this.series.values()) {
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
