import { MemoryLeaseStore, MemoryUnitOfWork, type MemoryTx } from '@herald/core';
import { describeInboxContract, describeOutboxContract, describeSchedulerContract, type UnitOfWorkFactory } from './index.ts';

const memory: UnitOfWorkFactory<MemoryTx> = async ({ clock }) => {
  const uow = new MemoryUnitOfWork({ clock, leases: new MemoryLeaseStore({ clock }) });
  return {
    uow,
    outbox: uow,
    scheduler: uow,
    leases: uow.leases,
    put: (tx, key, value) => tx.native.put('kv', key, value),
    get: async (key) => uow.read('kv', key) as string | undefined,
    close: async () => {},
  };
};

describeOutboxContract('memory', memory);
describeInboxContract('memory', memory);
describeSchedulerContract('memory', memory);
