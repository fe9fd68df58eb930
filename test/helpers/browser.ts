// Headless Debian Chromium driven by playwright-core (no browser download; playwright gives each
// launch a fresh temporary profile). Fails loudly with the
// install command when Chromium is missing: browser tests never skip.

import { type Browser, chromium } from 'playwright-core';
import { findBinary } from './binaries.js';

export function chromiumBinary(): string {
  return findBinary(
    'browser tests need Chromium',
    [process.env.CPN_CHROMIUM_BIN, '/usr/bin/chromium', '/usr/bin/chromium-browser'],
    'apt-get update && apt-get install -y chromium (or set CPN_CHROMIUM_BIN)',
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
