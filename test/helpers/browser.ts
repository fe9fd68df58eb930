// Headless Debian Chromium driven by playwright-core (no browser download; playwright gives each
// launch a fresh temporary profile). Fails loudly with the
// install command when Chromium is missing: browser tests never skip.

import { execFileSync } from 'node:child_process';
import { type Browser, chromium } from 'playwright-core';

export function chromiumBinary(): string {
  for (const candidate of [
    process.env.CPN_CHROMIUM_BIN,
    '/usr/bin/chromium',
    '/usr/bin/chromium-browser',
  ].filter(Boolean) as string[]) {
    try {
      execFileSync(candidate, ['--version'], { stdio: 'ignore' });
      return candidate;
    } catch {
      // next
    }
  }
  throw new Error(
    'browser tests need Chromium and none was found. Install it with: apt-get update && apt-get install -y chromium (or set CPN_CHROMIUM_BIN)',
  );
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: chromiumBinary(),
    headless: true,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
