import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // gRPC servers and child processes: keep files in separate workers, but only two at a time.
    pool: 'forks',
    maxWorkers: 2,
  },
});
