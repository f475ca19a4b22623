// What every browser scenario shares: the environment, the `WAIT` protocol
// with the Rust test (see testkit's `browser` module), Chromium started
// offline, and the way a scenario ends (`PASS` / `FAIL <why>`, exit code).

import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';

/** A required environment variable. */
export const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust side to do `step`; returns what it answered after OK. */
export async function hub(step, arg = '') {
  console.log(`WAIT ${step}${arg ? ' ' + arg : ''}`);
  const { value, done } = await lines.next();
  if (done) throw new Error(`stdin closed while waiting for ${step}`);
  if (!value.startsWith('OK')) throw new Error(`hub side failed at ${step}: ${value}`);
  return value.slice(2).trim();
}

export function check(cond, what) {
  if (!cond) throw new Error(`expectation failed: ${what}`);
}

export const tid = (id) => `[data-testid="${id}"]`;

/** Debian's headless Chromium, kept off the network (the machine has none
 *  beyond loopback; the hubs serve everything the page needs). */
export function launch() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
}

/** Runs `scenario` and leaves: 0 after it returned, 1 after `FAIL <why>`. */
export function run(scenario) {
  scenario().then(() => {
    // stdin (the test's answers) stays open: leave without waiting for it.
    process.exit(0);
  }).catch((e) => {
    console.log(`FAIL ${String(e && e.stack || e).split('\n').join(' / ')}`);
    process.exit(1);
  });
}
