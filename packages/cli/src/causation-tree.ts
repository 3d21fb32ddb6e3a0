/**
 * `herald causation`: a causation graph drawn for a terminal. One line per message (type,
 * service, where it was seen, time from the first message), under it one line per handling
 * record (✓ handled, ✗ failed with its error, ‖ parked behind a failed message of its key),
 * children indented with tree glyphs. Pure: a graph in, text out.
 *
 *   order.place  shop  topic commands/0@0  +0 ms
 *   │  ✓ orders/order.place  31 ms  (inbox)
 *   └─ order.placed  shop  topic orders/1@0  +36 ms  ✗ failed
 *         ✗ billing/order.placed  3 attempts  (dead letter)  card declined
 */
import type { CausationGraph, CausationNode, HandlingRecord } from '@herald/core';

/** The tree as lines (no trailing newline), a header line first. */
export function drawCausationTree(graph: CausationGraph): string[] {
  const start = minTime(graph.roots);
  const lines = [`correlation ${graph.correlationId}: ${graph.size} message(s)${graph.missing.length > 0 ? `; causes not found: ${graph.missing.join(', ')}` : ''}`];
  const draw = (n: CausationNode, head: string, prefix: string): void => {
    const offset = n.time !== undefined && start !== undefined ? `  +${formatMs(n.time - start)}` : '';
    lines.push(`${head}${n.type}  ${n.source}  ${n.where.join(', ')}${offset}${n.failed ? '  ✗ failed' : ''}`);
    const under = prefix + (n.children.length > 0 ? '│  ' : '   ');
    for (const h of n.handlers) lines.push(`${under}${handlerText(h)}`);
    n.children.forEach((c, i) => {
      const last = i === n.children.length - 1;
      draw(c, `${prefix}${last ? '└─ ' : '├─ '}`, `${prefix}${last ? '   ' : '│  '}`);
    });
  };
  for (const r of graph.roots) draw(r, '', '');
  return lines;
}

/** One handling record: mark, group/handler, duration, attempts, where it comes from, the error. */
export function handlerText(h: HandlingRecord): string {
  const parked = h.from === 'dead letter' && !h.failed;
  const parts = [`${h.failed ? '✗' : parked ? '‖' : '✓'} ${h.group}/${h.handler}`];
  if (h.durationMs !== undefined) parts.push(formatMs(h.durationMs));
  if (h.attempts !== undefined && h.attempts > 0) parts.push(`${h.attempts} attempt${h.attempts === 1 ? '' : 's'}`);
  parts.push(`(${parked ? 'parked, ' : ''}${h.from})`);
  if (h.failed && h.error !== undefined) parts.push(h.error.replace(/\s+/g, ' '));
  return parts.join('  ');
}

/** `0.4 ms`, `12 ms`, `1520 ms`: one decimal below 10 ms, whole milliseconds above. */
export function formatMs(ms: number): string {
  return `${ms < 10 ? Math.round(ms * 10) / 10 : Math.round(ms)} ms`;
}

function minTime(nodes: readonly CausationNode[]): number | undefined {
  let min: number | undefined;
  const visit = (n: CausationNode): void => {
    if (n.time !== undefined && (min === undefined || n.time < min)) min = n.time;
    n.children.forEach(visit);
  };
  nodes.forEach(visit);
  return min;
}
