import { DEFAULT_LATENCY_MODEL } from '../../src/core/latency.js';
import { MemoryStore } from '../../src/store/memory/memory-store.js';
import { storeContract } from '../contract/store-contract.js';

storeContract('memory', async (options) => {
  let now = 1_000_000;
  const store = new MemoryStore({ clock: () => now, latency: DEFAULT_LATENCY_MODEL, ...options });
  return {
    store,
    now: () => now,
    pass: async (ms) => {
      now += ms;
    },
    settle: async (check) => {
      if (!check()) throw new Error('the memory store must be consistent at once');
    },
    usage: async () => store.usageRecords(),
    close: () => store.close(),
  };
});
