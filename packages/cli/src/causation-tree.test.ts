import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildCausationGraph, type CausationMessage, type HandlingRecord } from '@herald/core';
import { drawCausationTree, formatMs } from './causation-tree.ts';

const msg = (id: string, causationId: string | undefined, time: number, source = 'svc'): CausationMessage => ({ id, type: `t.${id}`, source, time, causationId, where: `topic x/0@${time}` });
const handling = (messageId: string, over: Partial<HandlingRecord>): HandlingRecord => ({ messageId, group: 'g', handler: 'h', at: 0, durationMs: undefined, attempts: undefined, failed: false, error: undefined, from: 'inbox', ...over });

test('siblings get ├─ and └─, a non-last sibling continues with │, handlers sit under their message', () => {
  const g = buildCausationGraph(
    'c',
    [msg('a', undefined, 1000), msg('b', 'a', 1012), msg('b1', 'b', 1020), msg('c', 'a', 1030, 'other'), msg('z', 'gone', 2000)],
    [handling('a', { durationMs: 3.14 }), handling('b1', { group: 'bank', handler: 'charge', failed: true, attempts: 3, error: 'card\n declined', from: 'dead letter' }), handling('c', { from: 'dead letter', attempts: 0 })],
  );
  assert.deepEqual(drawCausationTree(g), [
    'correlation c: 5 message(s); causes not found: gone',
    't.a  svc  topic x/0@1000  +0 ms',
    '│  ✓ g/h  3.1 ms  (inbox)',
    '├─ t.b  svc  topic x/0@1012  +12 ms',
    '│  └─ t.b1  svc  topic x/0@1020  +20 ms  ✗ failed',
    '│        ✗ bank/charge  3 attempts  (dead letter)  card declined',
    '└─ t.c  other  topic x/0@1030  +30 ms',
    '      ‖ g/h  (parked, dead letter)',
    't.z  svc  topic x/0@2000  +1000 ms',
  ]);
});

test('formatMs: one decimal below 10 ms, whole milliseconds above', () => {
  assert.deepEqual([formatMs(0), formatMs(0.44), formatMs(9.96), formatMs(12.4), formatMs(1520.6)], ['0 ms', '0.4 ms', '10 ms', '12 ms', '1521 ms']);
});
