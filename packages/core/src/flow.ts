/**
 * Choreography, drawn from the code: which service publishes which event types to which
 * topics, who consumes them, and which events a handler produces in reaction. The input is
 * what services already declare (consumers' handlers with `produces`, plus what each service
 * publishes outside handlers); the output is a plain, serializable graph (JSON as is), read by
 * the console and the AsyncAPI export.
 *
 * Absent values are left out (no `undefined` fields), so the value survives a JSON round trip.
 *
 * Nodes: `service:<name>`, `topic:<topic>`, `event:<topic>/<type>` (an event type on a topic;
 * `<type>` alone when the topic is not known). Edges:
 * - `publishes`: service → event (declared in `publishes`, or by a handler's `produces`);
 * - `carries`: topic → event;
 * - `consumes`: event → service (one per handler: `group`, `handler`, `version`);
 * - `produces`: consumed event → produced event (the reaction: `service`, `handler`).
 */
import { HeraldError } from './errors.ts';
import type { Consumer, ProducedMessage } from './router.ts';

export interface FlowService {
  readonly name: string;
  readonly consumers?: readonly Pick<Consumer, 'describe'>[];
  /** Event types the service publishes outside handlers (API calls, decisions, timers): definitions, `{ topic, type }` or bare type names. */
  readonly publishes?: readonly (ProducedMessage | string)[];
}

export type FlowNode =
  | { readonly id: string; readonly kind: 'service'; readonly name: string }
  | { readonly id: string; readonly kind: 'topic'; readonly name: string }
  | { readonly id: string; readonly kind: 'event'; readonly type: string; readonly topic?: string; readonly versions: readonly number[] };

export type FlowEdge =
  | { readonly kind: 'publishes'; readonly from: string; readonly to: string }
  | { readonly kind: 'carries'; readonly from: string; readonly to: string }
  | { readonly kind: 'consumes'; readonly from: string; readonly to: string; readonly group: string; readonly handler: string; readonly version?: number }
  | { readonly kind: 'produces'; readonly from: string; readonly to: string; readonly service: string; readonly handler: string };

export interface Flow {
  /** Services first, then topics, then events, each sorted by id. */
  readonly nodes: readonly FlowNode[];
  /** Without duplicates, sorted by (kind, from, to). */
  readonly edges: readonly FlowEdge[];
}

export function describeFlow(services: readonly FlowService[]): Flow {
  const nodes = new Map<string, FlowNode>();
  const versions = new Map<string, Set<number>>();
  const edges = new Map<string, FlowEdge>();
  const seen = new Set<string>();

  const event = (m: ProducedMessage): string => {
    if (!m || typeof m.type !== 'string' || m.type.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `describeFlow: an event needs a type (got ${JSON.stringify(m)})`);
    const id = m.topic === undefined ? `event:${m.type}` : `event:${m.topic}/${m.type}`;
    if (!nodes.has(id)) {
      nodes.set(id, { id, kind: 'event', type: m.type, ...(m.topic !== undefined ? { topic: m.topic } : {}), versions: [] });
      versions.set(id, new Set());
    }
    if (m.version !== undefined) versions.get(id)!.add(m.version);
    if (m.topic !== undefined) {
      const t = `topic:${m.topic}`;
      if (!nodes.has(t)) nodes.set(t, { id: t, kind: 'topic', name: m.topic });
      edge({ kind: 'carries', from: t, to: id });
    }
    return id;
  };
  const edge = (e: FlowEdge): void => {
    const k = JSON.stringify(e);
    if (!edges.has(k)) edges.set(k, e);
  };

  for (const s of services) {
    if (!s || typeof s.name !== 'string' || s.name.length === 0) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', 'describeFlow: every service needs a non-empty name');
    if (seen.has(s.name)) throw new HeraldError('HERALD_ERR_INVALID_ARGUMENT', `describeFlow: service "${s.name}" is listed twice`);
    seen.add(s.name);
    const service = `service:${s.name}`;
    nodes.set(service, { id: service, kind: 'service', name: s.name });
    for (const p of s.publishes ?? []) edge({ kind: 'publishes', from: service, to: event(typeof p === 'string' ? { type: p } : p) });
    for (const consumer of s.consumers ?? []) {
      const d = consumer.describe();
      for (const c of d.consumes) {
        const consumed = event({ topic: c.topic, type: c.type, version: c.version });
        edge({ kind: 'consumes', from: consumed, to: service, group: d.group, handler: c.handler, ...(c.version !== undefined ? { version: c.version } : {}) });
        for (const p of c.produces) {
          const produced = event(p);
          edge({ kind: 'publishes', from: service, to: produced });
          edge({ kind: 'produces', from: consumed, to: produced, service: s.name, handler: c.handler });
        }
      }
    }
  }

  const order = { service: 0, topic: 1, event: 2 } as const;
  const out = [...nodes.values()].map((n) => (n.kind === 'event' ? { ...n, versions: [...versions.get(n.id)!].sort((a, b) => a - b) } : n));
  out.sort((a, b) => order[a.kind] - order[b.kind] || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const list = [...edges.values()].sort((a, b) => cmp(a.kind, b.kind) || cmp(a.from, b.from) || cmp(a.to, b.to) || cmp(JSON.stringify(a), JSON.stringify(b)));
  return { nodes: out, edges: list };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
