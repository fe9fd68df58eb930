import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // gRPC servers and child processes: keep files in separate workers, but only two at a time.
    pool: 'forks',
    maxWorkers: 2,
    // CI asks for a JSON report too, to print a plain "N passed, N failed" line.
    reporters: process.env.CPN_TEST_REPORT ? ['default', 'json'] : ['default'],
    outputFile: process.env.CPN_TEST_REPORT ? { json: process.env.CPN_TEST_REPORT } : undefined,
  },
});
