// Hubs on one Postgres: the dashboard of the active hub moves to the hub
// that takes over when its own hub dies (it asks every hub of `hub_urls`
// for its role).
//
// Started by tests/dashboard_browser.rs, which owns both hubs; the protocol
// on stdin/stdout is dashboard.mjs's (`WAIT <step>`, `OK`, `PASS`, `FAIL`).
//
// Env: HUB_A (active), HUB_B (standby), ADMIN_TOKEN, CHROMIUM.

import { env, hub, tid, launch, run } from './harness.mjs';

const HUB_A = env('HUB_A');
const HUB_B = env('HUB_B');
const ADMIN = env('ADMIN_TOKEN');
// Generous: these bound a hang, they do not measure speed.
const WAIT_MS = 60_000;

async function main() {
  const browser = await launch();
  try {
    const page = await (await browser.newContext()).newPage();
    page.setDefaultTimeout(WAIT_MS);
    const problems = [];
    page.on('pageerror', (e) => problems.push(String(e)));
    page.on('request', (r) => {
      const url = r.url();
      const ours = [HUB_A, HUB_B].some((h) => url.startsWith(h) || url.startsWith(h.replace('http', 'ws')));
      if (!ours) problems.push(`request outside the hubs: ${url}`);
    });

    await page.goto(`${HUB_A}/dashboard`);
    await page.fill(tid('login-token'), ADMIN);
    await page.click(tid('login-submit'));
    await page.locator(`${tid('conn-state')}[data-state="live"]`).waitFor();
    await page.locator(tid('hub-role'), { hasText: 'epoch 1' }).waitFor();
    console.log('live on the active hub (epoch 1)');

    await hub('kill_active');
    await page.waitForURL((u) => u.toString().startsWith(HUB_B), { timeout: WAIT_MS });
    console.log(`moved to ${page.url()}`);
    // The session lives in the shared database: no second login.
    await page.locator(`${tid('conn-state')}[data-state="live"]`).waitFor();
    await page.locator(tid('hub-role'), { hasText: 'epoch 2' }).waitFor();
    if (await page.locator(tid('login-form')).isVisible()) throw new Error('asked to log in again');
    console.log('live on the new active hub (epoch 2)');
    if (problems.length) throw new Error(problems.join('; '));
    console.log('PASS');
  } finally {
    await browser.close();
  }
}

run(main);
