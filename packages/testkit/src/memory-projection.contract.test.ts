// The projection contract against in-memory projections. A read model "persists" across
// close/reopen through `resume`, as a table would on SQLite.
import { createInMemoryProjection, InMemoryEventStore, type InMemoryProjection } from '@herald/eventsourcing';
import { type ContractRow, describeProjectionContract } from './index.ts';

type Model = ReadonlyMap<string, ContractRow>;

describeProjectionContract('memory', async () => {
  const store = new InMemoryEventStore();
  const saved = new Map<string, { state: Model; position: bigint }>();
  const open = new Set<InMemoryProjection<Model>>();
  return {
    store,
    project: async ({ name, mode, category, multiplier = 1, retry }) => {
      const resume = saved.get(name);
      const p = createInMemoryProjection<Model>(
        store,
        {
          name,
          ...(category !== undefined ? { category } : {}),
          initialState: () => new Map(),
          // Returns a new Map: an append whose later event throws leaves the state untouched.
          apply: (state, e) => {
            if (e.type !== 'contract.added') return state;
            const d = e.data as { amount: number; fail?: boolean };
            if (d.fail) throw new Error('contract: this event fails on purpose');
            const row = state.get(e.streamId) ?? { count: 0, total: 0, lastVersion: 0 };
            return new Map(state).set(e.streamId, { count: row.count + 1, total: row.total + d.amount * multiplier, lastVersion: e.streamVersion });
          },
        },
        { mode, ...(retry ? { retry } : {}), ...(resume ? { resume } : {}) },
      );
      open.add(p);
      const close = p.close.bind(p);
      return Object.assign(p, {
        read: async (streamId: string) => p.state.get(streamId),
        rows: async () => p.state.size,
        close: async () => {
          if (open.delete(p)) saved.set(name, { state: p.state, position: await p.position() });
          await close();
        },
      });
    },
    cleanup: async () => {
      for (const p of open) await p.close();
      await store.close();
    },
  };
});
