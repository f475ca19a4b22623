// The dashboard scenario, run in Debian's headless Chromium by playwright-core.
//
// Started by tests/dashboard_browser.rs, which owns the hub and the agent. Where
// the scenario needs something done on the hub's side it prints
// `WAIT <step> [arg]` and reads one line back: `OK [value]` or `FAIL <why>`.
// It prints `ARTIFACT <path>` for each screenshot, `PASS` at the end, and exits
// non-zero (after `FAIL <why>`) on the first failed expectation.
//
// Env: HUB_URL, ADMIN_TOKEN, AGENT_TOKEN, AGENT_ID, ARTIFACT_DIR, CHROMIUM.

import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { env, hub, check, tid, launch, run } from './harness.mjs';

const HUB = env('HUB_URL');
const ADMIN = env('ADMIN_TOKEN');
const AGENT_TOKEN = env('AGENT_TOKEN');
const AGENT_ID = env('AGENT_ID');
const OBSERVER_TOKEN = env('OBSERVER_TOKEN');
const ARTIFACTS = env('ARTIFACT_DIR');
// Generous: these bound a hang, they do not measure speed.
const WAIT_MS = 30_000;

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const browser = await launch();
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const page = await context.newPage();
    page.setDefaultTimeout(WAIT_MS);
    const problems = [];
    page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
    page.on('pageerror', (e) => problems.push(String(e)));
    // Nothing but the hub: a request elsewhere would fail offline.
    page.on('request', (r) => {
      if (!r.url().startsWith(HUB) && !r.url().startsWith(HUB.replace('http', 'ws'))) {
        problems.push(`request outside the hub: ${r.url()}`);
      }
    });

    await page.goto(`${HUB}/dashboard`);
    await page.locator(tid('login-form')).waitFor({ state: 'visible' });
    check(await page.locator(tid('dashboard')).isHidden(), 'dashboard hidden before login');

    // A wrong token and an agent's token are refused.
    await page.fill(tid('login-token'), 'not-a-token');
    await page.click(tid('login-submit'));
    await page.locator(tid('login-error')).filter({ hasText: /./ }).waitFor();
    check(await page.locator(tid('dashboard')).isHidden(), 'wrong token: still logged out');
    await page.fill(tid('login-token'), AGENT_TOKEN);
    await page.click(tid('login-submit'));
    await page.locator(tid('login-error')).filter({ hasText: /admin/i }).waitFor();
    check(await page.locator(tid('dashboard')).isHidden(), 'agent token: still logged out');
    console.log('refused: wrong token and agent token');

    // The admin token logs in; the socket goes live.
    await page.fill(tid('login-token'), ADMIN);
    await page.click(tid('login-submit'));
    await page.locator(tid('dashboard')).waitFor({ state: 'visible' });
    await page.locator(`${tid('conn-state')}[data-state="live"]`).waitFor();
    check(await page.locator(tid('login-form')).isHidden(), 'login form hidden after login');
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'agentcom_session');
    check(session && session.httpOnly && session.sameSite === 'Strict', 'HttpOnly SameSite=Strict session cookie');
    console.log('logged in');

    // The registered agent is offline: its card shows it, and the
    // no_agents_online alert fires; acknowledge it from the page.
    await page.locator(`${tid('agent-card')}[data-agent-id="${AGENT_ID}"][data-fsm-state="offline"]`).waitFor();
    const alert = page.locator(`${tid('alert-row')}[data-rule-id="no_agents_online"]`);
    await alert.waitFor();
    check((await alert.getAttribute('data-acknowledged')) === 'false', 'alert starts unacknowledged');
    await page.locator(`${tid('health-banner')}:not([data-status="ok"])`).waitFor();
    await alert.locator(tid('ack-btn')).click();
    await page.locator(`${tid('alert-row')}[data-rule-id="no_agents_online"][data-acknowledged="true"]`).waitFor();
    await hub('alert_acknowledged', 'no_agents_online');
    console.log('alert acknowledged');

    // Submit a task from the form: it shows as queued (no agent online).
    await page.fill(tid('submit-description'), 'Write the release notes for 1.2');
    await page.selectOption(tid('submit-priority'), 'high');
    await page.fill(tid('submit-capabilities'), '');
    // A bad glob is refused next to its field; nothing is queued.
    await page.fill(tid('submit-repo'), 'docs');
    await page.fill(tid('submit-write-paths'), '!CHANGELOG.md');
    await page.click(tid('submit-button'));
    await page.locator('[data-field-error="write_paths"]', { hasText: /negation/ }).waitFor();
    await page.fill(tid('submit-write-paths'), 'CHANGELOG.md, docs/release/**');
    await page.fill(tid('submit-concurrency-key'), 'releases');
    await page.click(tid('submit-button'));
    const result = page.locator(tid('submit-result')).filter({ hasText: /task-|[0-9a-f]{8}/ });
    await result.waitFor();
    const taskId = await hub('task_submitted_from_page');
    check((await result.textContent()).includes(taskId), `submit result names ${taskId}`);
    await page.locator(`${tid('task-row')}[data-task-id="${taskId}"][data-status="queued"]`).waitFor();
    // It waits for an agent: the queue panel shows for how long.
    await page.locator(`${tid('queue-oldest-wait')}:not([data-ms=""])`).waitFor();
    console.log(`queued ${taskId}`);

    // The agent connects: the task is assigned to it, then completed.
    await hub('agent_connect_and_take', taskId);
    await page.locator(`${tid('agent-card')}[data-agent-id="${AGENT_ID}"]:not([data-fsm-state="offline"])`).waitFor();
    await page.locator(`${tid('task-row')}[data-task-id="${taskId}"][data-status="assigned"]`).waitFor();
    await page.locator(`${tid('agent-card')}[data-agent-id="${AGENT_ID}"] ${tid('agent-current-task')}`, { hasText: taskId }).waitFor();
    console.log(`assigned ${taskId}`);
    // The agent reports progress: the tasks table and its card show it.
    await hub('agent_progress', taskId);
    await page.locator(`${tid('task-row')}[data-task-id="${taskId}"] ${tid('task-progress')}[data-percent="60"]`, { hasText: 'running the tests' }).waitFor();
    await page.locator(`${tid('agent-card')}[data-agent-id="${AGENT_ID}"] ${tid('agent-progress')}`, { hasText: '60%' }).waitFor();
    console.log(`progress ${taskId}`);
    await hub('agent_complete', taskId);
    await page.locator(`${tid('task-row')}[data-task-id="${taskId}"][data-status="completed"]`).waitFor();
    await page.locator(`${tid('completion-row')}[data-task-id="${taskId}"]`).waitFor();
    await page.locator(tid('throughput-completed')).filter({ hasText: /^[1-9]/ }).waitFor();
    console.log(`completed ${taskId}`);

    // The task's history opens from the table.
    await page.click(`${tid('task-row')}[data-task-id="${taskId}"]`);
    await page.locator(`${tid('task-detail')}[data-task-id="${taskId}"]`).waitFor({ state: 'visible' });
    for (const event of ['queued', 'assigned', 'completed']) {
      await page.locator(tid('task-history-entry'), { hasText: event }).first().waitFor();
    }
    // The agent's last progress stays on the task.
    await page.locator(tid('detail-progress'), { hasText: '60% · running the tests' }).waitFor();
    await page.click(tid('task-detail-close'));
    await page.locator(tid('task-detail')).waitFor({ state: 'hidden' });

    // A failed task lands in dead letter; retry it from the page.
    const deadId = await hub('dead_letter_task');
    const deadRow = page.locator(`${tid('dead-letter-row')}[data-task-id="${deadId}"]`);
    await deadRow.waitFor();
    await deadRow.locator(tid('retry-btn')).click();
    await page.locator(tid('action-result'), { hasText: 'requeued' }).waitFor();
    await deadRow.waitFor({ state: 'detached' });
    await hub('retried_task_runs_again', deadId);
    await page.locator(`${tid('task-row')}[data-task-id="${deadId}"][data-status="completed"]`).waitFor();
    console.log(`dead letter ${deadId} retried and completed`);

    // Write scopes: a task whose paths overlap a running task's waits, and its
    // detail says for whom; it runs once the holder completes.
    const [holderId, waiterId] = (await hub('scoped_pair')).split(' ');
    await page.locator(`${tid('task-row')}[data-task-id="${waiterId}"]`).waitFor();
    await page.click(`${tid('task-row')}[data-task-id="${waiterId}"]`);
    await page.locator(`${tid('task-detail')}[data-task-id="${waiterId}"]`).waitFor({ state: 'visible' });
    await page.locator(tid('detail-scope'), { hasText: 'src/api/handlers.rs' }).waitFor();
    await page.locator(`${tid('detail-waiting-scope')}[data-holder="${holderId}"]`, { hasText: AGENT_ID }).waitFor();
    await page.click(tid('task-detail-close'));
    // The running task's scope is listed with the reserved paths.
    const held = page.locator(`${tid('reservation-row')}[data-kind="task"][data-task-id="${holderId}"]`);
    await held.locator(tid('reservation-paths'), { hasText: 'src/api/**' }).waitFor();
    await held.locator(tid('reservation-holder'), { hasText: AGENT_ID }).waitFor();
    await hub('scoped_pair_runs', `${holderId} ${waiterId}`);
    await page.locator(`${tid('task-row')}[data-task-id="${waiterId}"][data-status="completed"]`).waitFor();
    await held.waitFor({ state: 'detached' });
    console.log(`scope ${waiterId} waited for ${holderId}`);

    // An operator's reservation: listed with holder and expiry; a task that
    // overlaps waits for it and runs once it is released from the page.
    const [resId, frozenId] = (await hub('reserved_paths')).split(' ');
    await page.click(tid('tasks-refresh'));
    await page.locator(`${tid('task-row')}[data-task-id="${frozenId}"] ${tid('task-waiting-scope')}`).waitFor();
    const resRow = page.locator(`${tid('reservation-row')}[data-reservation-id="${resId}"]`);
    await resRow.locator(tid('reservation-holder'), { hasText: 'release-freeze' }).waitFor();
    await resRow.locator('.res-expiry', { hasText: /^in \d+m$/ }).waitFor();
    await page.click(`${tid('task-row')}[data-task-id="${frozenId}"]`);
    await page.locator(`${tid('detail-waiting-scope')}[data-holder="${resId}"]`, { hasText: 'release-freeze' }).waitFor();
    await page.click(tid('task-detail-close'));
    await resRow.locator(tid('release-btn')).click();
    await page.locator(tid('action-result'), { hasText: `release ${resId}: released` }).waitFor();
    await resRow.waitFor({ state: 'detached' });
    await hub('released_task_runs', frozenId);
    await page.locator(`${tid('task-row')}[data-task-id="${frozenId}"][data-status="completed"]`).waitFor();
    console.log(`reservation ${resId} released from the page; ${frozenId} ran`);

    // Concurrency keys: running / limit in the queue panel, live.
    const keyedId = await hub('keyed_task_running');
    const keyRow = page.locator(`${tid('concurrency-row')}[data-key="nightly"]`);
    await keyRow.locator(tid('concurrency-count'), { hasText: '1 / 1' }).waitFor();
    check(await keyRow.getAttribute('data-full') === 'true', 'a key at its limit is marked full');
    await page.click(`${tid('task-row')}[data-task-id="${keyedId}"]`);
    await page.locator(tid('detail-concurrency-key'), { hasText: 'nightly' }).waitFor();
    await page.click(tid('task-detail-close'));
    await hub('keyed_task_done', keyedId);
    await keyRow.locator(tid('concurrency-count'), { hasText: '0 / 1' }).waitFor();
    console.log(`concurrency key nightly shown running and done (${keyedId})`);

    // Slots: an agent with two slots shows each task it runs on its card.
    const wideIds = (await hub('slotted_agent_busy')).split(',');
    const wideCard = page.locator(`${tid('agent-card')}[data-agent-id="wide"]`);
    await wideCard.locator(tid('agent-slots'), { hasText: '2 of 2 busy' }).waitFor();
    for (const id of wideIds) {
      await wideCard.locator(`${tid('agent-running-task')}[data-task-id="${id}"][data-state="working"]`).waitFor();
    }
    await hub('slotted_agent_done');
    await wideCard.locator(tid('agent-running-task')).first().waitFor({ state: 'detached' });
    console.log(`agent wide showed its two running tasks (${wideIds.join(', ')})`);

    // Usage limit: the agent's group is paused with a countdown on its card and
    // in the panel; the operator resumes it from the page.
    const group = await hub('usage_limited');
    const usageRow = page.locator(`${tid('usage-row')}[data-group="${group}"]`);
    await usageRow.locator(tid('usage-countdown'), { hasText: /^resumes in (59m|1h)/ }).waitFor();
    await page.locator(`${tid('agent-card')}[data-agent-id="${AGENT_ID}"] ${tid('agent-paused-until')}`, { hasText: 'resumes in' }).waitFor();
    await usageRow.locator(tid('usage-resume-btn')).click();
    await page.locator(tid('action-result'), { hasText: `resume ${group}: resumed` }).waitFor();
    await usageRow.waitFor({ state: 'detached' });
    await page.locator(`${tid('agent-card')}[data-agent-id="${AGENT_ID}"] ${tid('agent-paused-until')}`).waitFor({ state: 'detached' });
    await hub('usage_resumed');
    console.log(`usage pause of ${group} shown and resumed from the page`);

    // Questions: an agent asks; the answer is a click on an option...
    const askedId = await hub('agent_asks', 'options');
    const qRow = page.locator(`${tid('question-row')}[data-task-id="${askedId}"]`);
    await qRow.locator(tid('question-text'), { hasText: 'Which region' }).waitFor();
    await qRow.locator(`${tid('question-option')}[data-answer="eu"]`).click();
    await page.locator(tid('action-result'), { hasText: `answer ${askedId}: sent` }).waitFor();
    await qRow.waitFor({ state: 'detached' });
    await hub('question_answered', `${askedId}:eu`);
    // ...or typed, at phone width.
    await page.setViewportSize({ width: 375, height: 800 });
    const typedId = await hub('agent_asks', 'free');
    const tRow = page.locator(`${tid('question-row')}[data-task-id="${typedId}"]`);
    await tRow.locator(tid('question-input')).fill('eu-west-1');
    await tRow.locator(tid('question-submit')).click();
    await tRow.waitFor({ state: 'detached' });
    await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
    await page.setViewportSize({ width: 1400, height: 1000 });
    await hub('question_answered', `${typedId}:eu-west-1`);
    console.log(`questions of ${askedId} and ${typedId} answered from the page`);

    // Approvals: a held result with its pull request; rejected with a reason
    // (at phone width), then approved once the agent reworked it.
    const reviewId = await hub('agent_completes_for_review');
    const aRow = page.locator(`${tid('question-row')}[data-task-id="${reviewId}"][data-kind="approval"]`);
    await aRow.locator(tid('approval-pr'), { hasText: 'example.test/acme/pull/5' }).waitFor();
    await aRow.locator(tid('approval-summary'), { hasText: 'Renamed billing' }).waitFor();
    await aRow.locator(tid('approval-reasons'), { hasText: 'before completion' }).waitFor();
    await page.setViewportSize({ width: 375, height: 800 });
    await aRow.locator(tid('reject-input')).fill('Add a test for the rename');
    await aRow.locator(tid('reject-btn')).click();
    await page.locator(tid('action-result'), { hasText: `reject ${reviewId}: sent` }).waitFor();
    await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
    await page.setViewportSize({ width: 1400, height: 1000 });
    await hub('review_rejected', `${reviewId}:Add a test for the rename`);
    await aRow.locator(tid('approval-summary'), { hasText: 'with tests' }).waitFor();
    await aRow.locator(tid('approve-btn')).click();
    await page.locator(tid('action-result'), { hasText: `approve ${reviewId}: sent` }).waitFor();
    await aRow.waitFor({ state: 'detached' });
    await hub('review_approved', reviewId);
    await page.locator(`${tid('task-row')}[data-task-id="${reviewId}"][data-status="completed"]`).waitFor();
    console.log(`approval of ${reviewId} rejected, then approved from the page`);

    // A task submitted from the form with approval before start waits in the
    // Questions panel; approved there, it is queued.
    await page.fill(tid('submit-description'), 'Rotate the database credentials');
    await page.selectOption(tid('submit-approval'), 'before_start');
    await page.click(tid('submit-button'));
    const gatedId = await hub('gated_task_submitted');
    const gRow = page.locator(`${tid('question-row')}[data-task-id="${gatedId}"][data-kind="approval"]`);
    await gRow.locator(tid('question-text'), { hasText: 'Approve before start' }).waitFor();
    await gRow.locator(tid('approve-btn')).click();
    await gRow.waitFor({ state: 'detached' });
    await hub('gated_task_queued', gatedId);
    console.log(`task ${gatedId} submitted for approval and approved from the page`);

    // Budgets: an agent's task goes over its budget; the spend panel shows
    // it; a raise from the Questions panel lets the agent go on.
    const boundedId = await hub('agent_over_budget');
    const bRow = page.locator(`${tid('question-row')}[data-task-id="${boundedId}"][data-kind="budget"]`);
    await bRow.locator(tid('budget-spent'), { hasText: '1,500 of 1,000 tokens' }).waitFor();
    await page.locator(`${tid('spend-row')}[data-kind="agent"][data-name="${AGENT_ID}"] ${tid('spend-amount')}`, { hasText: '$0.25' }).waitFor();
    await page.locator(`${tid('spend-row')}[data-kind="capability"][data-name="agent:${AGENT_ID}"] ${tid('spend-amount')}`, { hasText: '1,500 tokens' }).waitFor();
    await bRow.locator(tid('budget-tokens-input')).fill('5000');
    await bRow.locator(tid('budget-raise-btn')).click();
    await page.locator(tid('action-result'), { hasText: `budget ${boundedId}: resumed` }).waitFor();
    await bRow.waitFor({ state: 'detached' });
    await hub('agent_resumed', boundedId);
    console.log(`task ${boundedId} paused over budget and resumed from the page`);

    // Policies (admin): a bad rule is refused next to the editor; a good one
    // and a daily budget are saved.
    await page.fill(tid('rules-text'), '[{"name": "infra"}]');
    await page.click(tid('rules-save'));
    await page.locator(tid('rules-error'), { hasText: 'rules[0].paths' }).waitFor();
    await page.fill(tid('rules-text'), '[{"name": "infra", "paths": ["infra/**"]}]');
    await page.click(tid('rules-save'));
    await page.locator(tid('action-result'), { hasText: 'approval rules: saved' }).waitFor();
    await page.fill(tid('budgets-text'), `{"agents": {"${AGENT_ID}": {"tokens": 900000}}}`);
    await page.click(tid('budgets-save'));
    await page.locator(tid('action-result'), { hasText: 'daily budgets: saved' }).waitFor();
    await hub('policies_saved');
    console.log('approval rules and daily budgets saved from the page');

    // Topics: events published by an agent show live; a topic opens to its
    // newest events.
    await hub('topic_events_published', '2');
    const topicRow = page.locator(`${tid('topic-row')}[data-topic="pr_opened"]`);
    await topicRow.locator(tid('topic-count'), { hasText: '2 events' }).waitFor();
    await topicRow.locator(tid('topic-open')).click();
    await page.locator(`${tid('topic-events')} ${tid('topic-event')}`, { hasText: '"pr":1' }).waitFor();
    await hub('topic_events_published', '1');
    await topicRow.locator(tid('topic-count'), { hasText: '3 events' }).waitFor();
    await page.locator(`${tid('topic-events')} ${tid('topic-event')}`, { hasText: '"pr":2' }).waitFor();
    console.log('topic events shown live and opened from the page');

    // A subscription made by an operator shows how often it fired; deleted from the page.
    const subId = await hub('subscription_made');
    await hub('topic_events_published', '1');
    const subRow = page.locator(`${tid('subscription-row')}[data-id="${subId}"]`);
    await subRow.locator(tid('subscription-fired'), { hasText: 'fired 1' }).waitFor();
    await subRow.locator(tid('unsubscribe-btn')).click();
    await page.locator(tid('action-result'), { hasText: `unsubscribe ${subId}: deleted` }).waitFor();
    await subRow.waitFor({ state: 'detached' });
    await hub('subscription_gone', subId);
    console.log(`subscription ${subId} shown firing and deleted from the page`);

    // Results flow on: a fan-in over a correlation, with a dependency's
    // result handed on and a task.finished event at its end. A correlation
    // nobody has is refused next to its field.
    const parts = (await hub('fan_in_parts')).split(',');
    await page.fill(tid('submit-description'), 'Summarize the parts');
    await page.fill(tid('submit-fan-in'), 'batch-nobody');
    await page.click(tid('submit-button'));
    await page.locator('[data-field-error="depends_on_correlation"]', { hasText: 'no task has correlation' }).waitFor();
    await page.fill(tid('submit-fan-in'), 'batch-fan');
    await page.fill(tid('submit-depends-on'), deadId);
    await page.check(tid('submit-inputs'));
    await page.selectOption(tid('submit-notify'), 'event');
    await page.click(tid('submit-button'));
    const fanId = await hub('fan_in_submitted', deadId);
    await page.click(`${tid('submit-result')} button`);
    const fanDetail = page.locator(`${tid('task-detail')}[data-task-id="${fanId}"]`);
    await fanDetail.locator(tid('detail-fan-in'), { hasText: 'every task of batch-fan' }).waitFor();
    await fanDetail.locator(tid('detail-inputs-from'), { hasText: deadId }).waitFor();
    await fanDetail.locator(tid('detail-notify'), { hasText: 'task.finished event' }).waitFor();
    for (const p of parts.concat([deadId])) {
      await fanDetail.locator(tid('detail-depends-on'), { hasText: p }).waitFor();
    }
    await page.click(tid('task-detail-close'));
    console.log(`fan-in ${fanId} over ${parts.length} parts submitted and shown from the page`);

    // More options: what the page checks itself (seconds, JSON) is marked
    // before anything is sent; what the hub refuses is shown under its field;
    // a good submit carries every option, and the drawer shows them.
    await page.fill(tid('submit-description'), 'Nightly report');
    await page.click(`${tid('submit-more')} summary`);
    await page.fill(tid('submit-stall'), 'soon');
    await page.fill(tid('submit-metadata'), '[1, 2]');
    await page.click(tid('submit-button'));
    await page.locator('[data-field-error="stall_ms"]', { hasText: 'whole number of seconds' }).waitFor();
    await page.locator('[data-field-error="metadata"]', { hasText: 'JSON object' }).waitFor();
    await page.locator(tid('submit-result'), { hasText: 'Not submitted' }).waitFor();
    await page.fill(tid('submit-stall'), '60');
    await page.fill(tid('submit-max-runtime'), '0');
    await page.fill(tid('submit-metadata'), '{"ticket": "OPS-12"}');
    await page.click(tid('submit-button'));
    await page.locator('[data-field-error="max_runtime_ms"]', { hasText: /./ }).waitFor();
    await hub('nothing_submitted', 'Nightly report');
    // A datetime-local field's value: the browser's local time, to the second.
    const pad = (n) => String(n).padStart(2, '0');
    const localInput = (d) => `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
    const later = new Date(Date.now() + 3600 * 1000);
    await page.fill(tid('submit-max-runtime'), '600');
    await page.fill(tid('submit-correlation'), 'nightly');
    await page.fill(tid('submit-dedupe-key'), 'nightly-1');
    await page.fill(tid('submit-run-after'), localInput(later));
    await page.fill(tid('submit-context-keys'), 'project.style, project.owners');
    await page.fill(tid('submit-lease'), '120');
    await page.fill(tid('submit-max-reclaims'), '2');
    await page.selectOption(tid('submit-blocked-policy'), 'wait');
    const due = new Date(later.getTime() + 3600 * 1000);
    await page.fill(tid('submit-complete-by'), localInput(due));
    await page.click(tid('submit-button'));
    const moreId = await hub('more_options_submitted', String(later.getTime()));
    await page.click(`${tid('submit-result')} button`);
    const moreDetail = page.locator(`${tid('task-detail')}[data-task-id="${moreId}"]`);
    await moreDetail.locator(tid('detail-correlation'), { hasText: 'nightly' }).waitFor();
    await moreDetail.locator(tid('detail-dedupe-key'), { hasText: 'nightly-1' }).waitFor();
    await moreDetail.locator(tid('detail-context-keys'), { hasText: 'project.owners' }).waitFor();
    await moreDetail.locator(tid('detail-blocked-policy'), { hasText: 'wait' }).waitFor();
    await moreDetail.getByText('OPS-12').waitFor();
    await page.click(tid('task-detail-close'));
    console.log(`task ${moreId} submitted with every one of More options and shown from the page`);

    // Shared context: a key opens with its value; an edit saves a new
    // version; an edit from a stale version is refused, naming the current
    // one; an older version opens from the history.
    await hub('context_seeded');
    await page.click(tid('context-refresh'));
    const ctxRow = page.locator(`${tid('context-row')}[data-key="project.conventions"]`);
    await ctxRow.locator(tid('context-version'), { hasText: 'v1' }).waitFor();
    await ctxRow.locator(tid('context-open')).click();
    await page.locator(tid('context-view-value'), { hasText: 'rust 2021' }).waitFor();
    await page.fill(tid('context-text'), 'rust 2024');
    await page.click(tid('context-save'));
    await page.locator(tid('action-result'), { hasText: 'context project.conventions: version 2' }).waitFor();
    await hub('context_changed_elsewhere');
    await page.fill(tid('context-text'), 'rust 2024, clippy clean');
    await page.click(tid('context-save'));
    await page.locator(tid('context-error'), { hasText: 'now at version 3' }).waitFor();
    await page.locator(`${tid('context-history-row')}[data-version="1"] ${tid('context-version-open')}`).click();
    await page.locator(tid('context-view-value'), { hasText: 'rust 2021' }).waitFor();
    await hub('context_checked');
    console.log('shared context edited, a stale edit refused, history opened from the page');

    // Filters: only cancelled tasks (none) and back to all.
    await page.selectOption(tid('tasks-filter-status'), 'cancelled');
    await page.click(tid('tasks-refresh'));
    await page.locator(tid('task-row')).first().waitFor({ state: 'detached' });
    await page.selectOption(tid('tasks-filter-status'), 'completed');
    await page.fill(tid('tasks-filter-agent'), AGENT_ID);
    await page.click(tid('tasks-refresh'));
    await page.locator(`${tid('task-row')}[data-task-id="${deadId}"]`).waitFor();
    check(await page.locator(`${tid('task-row')}:not([data-status="completed"])`).count() === 0, 'filter: only completed rows');
    await page.selectOption(tid('tasks-filter-status'), '');
    await page.fill(tid('tasks-filter-agent'), '');
    await page.click(tid('tasks-refresh'));

    // The storage panel counts archived finished work.
    await page.locator(tid('storage-archived'), { hasText: /\d+ tasks · \d+ runs · \d+ files/ }).waitFor();

    // Backup now, from the storage panel.
    await page.click(tid('backup-now'));
    await page.locator(tid('backup-result')).filter({ hasText: /\.acbk/ }).waitFor();
    await hub('backup_taken');
    console.log('backup taken from the page');

    // Populated dashboard: the artifact.
    await page.locator(`${tid('chart-queue-depth')}`).waitFor();
    const shot = join(ARTIFACTS, 'dashboard.png');
    await page.screenshot({ path: shot, fullPage: true });
    console.log(`ARTIFACT ${shot}`);

    // Phone width: one column, nothing wider than the screen.
    await page.setViewportSize({ width: 375, height: 800 });
    await page.waitForFunction(() => document.documentElement.scrollWidth <= window.innerWidth + 1);
    const phone = join(ARTIFACTS, 'dashboard-phone.png');
    await page.screenshot({ path: phone, fullPage: true });
    console.log(`ARTIFACT ${phone}`);
    await page.setViewportSize({ width: 1400, height: 1000 });

    // The hub stops: the page says so; it comes back: the page recovers by itself.
    await hub('stop_hub');
    await page.locator(`${tid('conn-state')}[data-state="disconnected"]`).waitFor();
    check(/disconnected/i.test(await page.locator(tid('conn-state')).textContent()), 'conn-state text says Disconnected');
    await hub('start_hub');
    await page.locator(`${tid('conn-state')}[data-state="live"]`).waitFor();
    await page.locator(`${tid('task-row')}[data-task-id="${taskId}"]`).waitFor();
    console.log('reconnected after the hub restarted');

    // An observer's token: the same live page, without the controls. The
    // admin's page shows the cancel control of a waiting task; the observer's
    // does not, nor the submit form or the backup button.
    const waitingId = await hub('queued_for_nobody');
    await page.click(`${tid('task-row')}[data-task-id="${waitingId}"]`);
    await page.locator(tid('detail-cancel-btn')).waitFor({ state: 'visible' });
    await page.click(tid('task-detail-close'));
    const eyeContext = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const eye = await eyeContext.newPage();
    eye.setDefaultTimeout(WAIT_MS);
    await eye.goto(`${HUB}/dashboard`);
    await eye.locator(tid('login-form')).waitFor({ state: 'visible' });
    await eye.fill(tid('login-token'), OBSERVER_TOKEN);
    await eye.click(tid('login-submit'));
    await eye.locator(`${tid('conn-state')}[data-state="live"]`).waitFor();
    await eye.locator(tid('role-badge'), { hasText: 'observer night-watch' }).waitFor();
    await eye.click(`${tid('task-row')}[data-task-id="${waitingId}"]`);
    await eye.locator(`${tid('task-detail')}[data-task-id="${waitingId}"]`).waitFor({ state: 'visible' });
    await eye.locator(tid('detail-cancel-btn')).waitFor({ state: 'attached' });
    check(await eye.locator(tid('detail-cancel-btn')).isHidden(), 'observer: no cancel control');
    check(await eye.locator(tid('submit-form')).isHidden(), 'observer: no submit form');
    check(await eye.locator(tid('backup-now')).isHidden(), 'observer: no backup button');
    check(await page.locator(tid('submit-form')).isVisible(), 'admin: the submit form');
    await eyeContext.close();
    console.log(`an observer watched ${waitingId} without controls`);

    // Logout ends the session, also for a reload.
    await page.click(tid('logout'));
    await page.locator(tid('login-form')).waitFor({ state: 'visible' });
    await page.reload();
    await page.locator(tid('login-form')).waitFor({ state: 'visible' });
    check(await page.locator(tid('dashboard')).isHidden(), 'logged out after reload');
    console.log('logged out');

    const real = problems.filter((p) => !/WebSocket|ERR_CONNECTION_REFUSED|Failed to load resource/.test(p));
    check(real.length === 0, `no page errors: ${real.join(' | ')}`);
    console.log('PASS');
  } finally {
    await browser.close();
  }
}

run(main);
