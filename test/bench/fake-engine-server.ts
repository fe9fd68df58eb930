// The fake OpenAI-compatible engine as its own process, for the gateway benchmark.
// Usage: fake-engine-server.ts CHUNKS CHUNK_DELAY_MS. Prints "READY <url>"; exits when its standard input closes.
import { startFakeEngine } from '../helpers/fake-engine.js';

const engine = await startFakeEngine({
  outputTokens: Number(process.argv[2] ?? 20),
  chunkDelayMs: Number(process.argv[3] ?? 0),
});
process.stdout.write(`READY ${engine.url}\n`);
process.stdin.resume();
process.stdin.on('end', () => {
  engine.close().then(() => process.exit(0));
});
