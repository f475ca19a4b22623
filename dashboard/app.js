/*
 * AgentCom operator dashboard: browser side.
 *
 * Classic script loaded with `defer` after charts.js. No framework, no network
 * access except to the hub itself (same origin). Runs under a strict CSP: no inline
 * code or styles; every piece of data from the hub is inserted with textContent.
 *
 * Data flow: login (cookie) → WebSocket /ws/dashboard → `snapshot` replaces the
 * model, `events` patch it → panels marked dirty → re-rendered on the next frame.
 * The tasks table and the task detail come from the HTTP API and are patched live by
 * task events.
 */
(function () {
  'use strict';

  // ---------------------------------------------------------------- constants

  const TASK_STATUSES = ['queued', 'assigned', 'blocked', 'completed', 'dead_letter', 'cancelled'];
  const TERMINAL = new Set(['completed', 'dead_letter', 'cancelled']);
  const PRIORITY_NAMES = ['urgent', 'high', 'normal', 'low'];
  const HOUR_MS = 3600 * 1000;
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 10000;
  const SNAPSHOT_MIN_INTERVAL_MS = 2000;
  const SNAPSHOT_DEBOUNCE_MS = 300;
  const LIST_CAP = 100;
  const TABLE_CAP = 500;
  const ALERT_LOG_SHOWN = 25;
  const IDLE_PROBE_MS = 45000;
  const PROBE_TIMEOUT_MS = 10000;
  const REL_REFRESH_TICKS = 5;
  const STORAGE_EVENTS = {
    backup_complete: ['Backup complete', 'ok'],
    backup_failed: ['Backup failed', 'bad'],
    compaction_complete: ['Compaction complete', 'ok'],
    compaction_failed: ['Compaction failed', 'bad'],
    recovery_complete: ['Recovery complete', 'warn'],
    recovery_failed: ['Recovery failed', 'bad'],
  };

  // ------------------------------------------------------------------- model

  function emptyModel() {
    return {
      loggedIn: false,
      conn: { state: 'connecting', everLive: false, attempt: 0, nextRetryAt: 0, checking: false, movingTo: '' },
      // This hub among hubs on one database: {storage, role, epoch, hub_urls}.
      hub: null,
      haveSnapshot: false,
      clockOffset: 0,          // server time − local time, from the newest snapshot
      uptimeMs: null,
      uptimeAt: 0,             // local time when uptimeMs was received
      health: { status: 'ok', conditions: [] },
      agents: new Map(),       // agent_id → AgentCard
      queue: { by_status: {}, by_priority: {}, dead_letter: 0 },
      deadLetter: [],          // Task, newest first
      reservations: [],        // live claims on repository paths (GET /api/reservations rows)
      concurrency: [],         // {key, limit, running} of keys with a limit or a running task
      usage: [],               // paused credential groups {credential_group, until, reported_by, reason}
      questions: [],           // GET /api/questions rows: {task_id, description, assigned_to, question}
      spend: null,             // GET /api/spend (and each metrics snapshot's spend)
      topics: [],              // GET /api/topics rows: {topic, count, last_seq, last_published_at}
      topicOpen: null,         // the topic whose newest events are shown
      topicEvents: [],
      subscriptions: [],       // GET /api/subscriptions
      context: [],             // GET /api/context heads
      contextOpen: null,       // the key shown (and edited)
      contextVersion: 0,       // the version of it the editor read (compare-and-set)
      contextShown: null,      // the version shown: {key, version, value | text, ...}
      contextHistory: [],
      completions: [],         // completion records, newest first
      throughput: { completed_last_hour: 0, avg_completion_ms: null, total_tokens_hour: 0 },
      storage: null,
      alerts: new Map(),       // rule_id → Alert (active)
      alertLog: [],            // AlertEvent, newest first
      rateLimits: null,
      charts: { interval_ms: 0, points: [] },
      tasks: { rows: [], byId: new Map(), nextCursor: null, loading: false, error: null, loadedAt: 0 },
      detail: { id: null, task: null, loading: false, error: null },
      pending: new Set(),      // "retry:<id>", "cancel:<id>", "ack:<rule>"
      taskSeq: new Map(),      // task_id → newest applied event seq
      taskStatus: new Map(),   // task_id → status from the newest applied event
      taskProgress: new Map(), // task_id → the holder's latest {percent, message}
      backupRunning: false,
    };
  }

  let model = emptyModel();

  function serverNow() { return Date.now() + model.clockOffset; }

  // --------------------------------------------------------------- utilities

  /** Build an element. props: class, text, testid, data{}, attrs (strings), hidden, disabled, title. */
  function h(tag, props) {
    const el = document.createElement(tag);
    if (props) {
      for (const k of Object.keys(props)) {
        const v = props[k];
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = String(v);
        else if (k === 'testid') el.setAttribute('data-testid', v);
        else if (k === 'data') {
          for (const dk of Object.keys(v)) if (v[dk] !== undefined && v[dk] !== null) el.dataset[dk] = String(v[dk]);
        } else if (k === 'hidden') el.hidden = true;
        else if (k === 'disabled') el.disabled = true;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    for (let i = 2; i < arguments.length; i++) appendKid(el, arguments[i]);
    return el;
  }

  function appendKid(el, kid) {
    if (kid === undefined || kid === null || kid === false) return;
    if (Array.isArray(kid)) { for (const k of kid) appendKid(el, k); return; }
    el.append(kid instanceof Node ? kid : String(kid)); // strings become text nodes
  }

  function isNum(v) { return typeof v === 'number' && isFinite(v); }
  function str(v) { return v === undefined || v === null ? '' : String(v); }
  function countText(v) { return isNum(v) ? String(Math.round(v)) : '0'; }

  function fmtInt(v) { return isNum(v) ? Math.round(v).toLocaleString('en-US') : '—'; }

  function fmtDuration(ms) {
    if (!isNum(ms)) return '—';
    const a = Math.abs(ms);
    if (a < 1000) return Math.round(ms) + ' ms';
    if (a < 10000) return (ms / 1000).toFixed(2) + ' s';
    if (a < 60000) return (ms / 1000).toFixed(1) + ' s';
    const s = Math.round(a / 1000);
    if (s < 3600) return Math.floor(s / 60) + 'm ' + (s % 60) + 's';
    if (s < 86400) return Math.floor(s / 3600) + 'h ' + Math.floor((s % 3600) / 60) + 'm';
    return Math.floor(s / 86400) + 'd ' + Math.floor((s % 86400) / 3600) + 'h';
  }

  function fmtDurationShort(ms) {
    if (!isNum(ms)) return '—';
    const a = Math.abs(ms);
    if (a < 1000) return Math.round(ms) + 'ms';
    if (a < 60000) return (Math.round(ms / 100) / 10) + 's';
    if (a < HOUR_MS) return (Math.round(ms / 6000) / 10) + 'm';
    return (Math.round(ms / 360000) / 10) + 'h';
  }

  function fmtSpan(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm';
    if (s < 86400) {
      const m = Math.floor((s % 3600) / 60);
      return Math.floor(s / 3600) + 'h' + (m ? ' ' + m + 'm' : '');
    }
    const hr = Math.floor((s % 86400) / 3600);
    return Math.floor(s / 86400) + 'd' + (hr ? ' ' + hr + 'h' : '');
  }

  function fmtRel(ts) {
    if (!isNum(ts)) return '—';
    const d = serverNow() - ts;
    if (Math.abs(d) < 2000) return 'just now';
    return d >= 0 ? fmtSpan(d) + ' ago' : 'in ' + fmtSpan(-d);
  }

  function fmtUptime(ms) {
    if (!isNum(ms)) return '—';
    const s = Math.max(0, Math.floor(ms / 1000));
    const d = Math.floor(s / 86400), hr = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
    if (d) return d + 'd ' + hr + 'h';
    if (hr) return hr + 'h ' + m + 'm';
    if (m) return m + 'm ' + (s % 60) + 's';
    return (s % 60) + 's';
  }

  function fmtAbs(ts) {
    if (!isNum(ts)) return '';
    const d = new Date(ts);
    return isNaN(d.getTime()) ? '' : d.toLocaleString();
  }

  function fmtClock(ts) {
    if (!isNum(ts)) return '—';
    const d = new Date(ts);
    const today = new Date();
    const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    return d.toDateString() === today.toDateString() ? time : d.toLocaleDateString() + ' ' + time;
  }

  function fmtBytes(n) {
    if (!isNum(n)) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = n, i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
  }

  /** Compact one-line rendering of any JSON value (for details, records, errors). */
  function fmtValue(v) {
    if (v === undefined || v === null) return '—';
    if (typeof v === 'string') return v;
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    if (Array.isArray(v)) return v.map(fmtValue).join(', ');
    try {
      return Object.keys(v).map(function (k) {
        const x = v[k];
        return k + ': ' + (x !== null && typeof x === 'object' ? JSON.stringify(x) : str(x));
      }).join(', ');
    } catch (e) {
      return String(v);
    }
  }

  function priorityName(p) {
    if (typeof p === 'string') return p;
    return isNum(p) && PRIORITY_NAMES[p] ? PRIORITY_NAMES[p] : str(p);
  }

  function safeHttpUrl(u) {
    return typeof u === 'string' && /^https?:\/\//i.test(u.trim()) ? u.trim() : null;
  }

  /** A span that the ticker keeps at "12m ago". */
  function relTime(ts, extraClass) {
    if (!isNum(ts)) return h('span', { class: 'muted' + (extraClass ? ' ' + extraClass : ''), text: '—' });
    return h('span', {
      class: 'reltime' + (extraClass ? ' ' + extraClass : ''),
      data: { rel: ts },
      title: fmtAbs(ts),
      text: fmtRel(ts),
    });
  }

  function badge(text, kind, extra) {
    return h('span', Object.assign({ class: 'badge badge-' + String(kind || 'neutral').replace(/[^a-z0-9_-]/gi, '') , text: text }, extra || {}));
  }

  function statusBadge(status) { return badge(str(status) || '?', 'st-' + str(status)); }

  function chip(text, cls) { return h('span', { class: 'chip' + (cls ? ' ' + cls : ''), text: text }); }

  function taskLink(id, cls) {
    return h('button', {
      type: 'button',
      class: 'link mono' + (cls ? ' ' + cls : ''),
      data: { action: 'open-task', target: id },
      title: 'Open task ' + id,
      text: id,
    });
  }

  /**
   * Keyed list update: reuse elements whose data did not change (same signature),
   * rebuild the others, remove the missing, keep order.
   */
  function reconcile(container, items, keyOf, build, sigOf) {
    const existing = new Map();
    for (const el of Array.from(container.children)) {
      if (el.dataset && el.dataset.key !== undefined) existing.set(el.dataset.key, el);
      else el.remove();
    }
    const keep = new Set();
    let prev = null;
    for (const item of items) {
      const key = String(keyOf(item));
      if (keep.has(key)) continue; // duplicate key: first one wins
      keep.add(key);
      const sig = sigOf(item);
      let el = existing.get(key);
      if (!el || el.__sig !== sig) {
        const fresh = build(item);
        fresh.dataset.key = key;
        fresh.__sig = sig;
        if (el) el.replaceWith(fresh);
        el = fresh;
      }
      const want = prev ? prev.nextSibling : container.firstChild;
      if (want !== el) container.insertBefore(el, want);
      prev = el;
    }
    for (const [key, el] of existing) if (!keep.has(key)) el.remove();
  }

  function sig(obj) {
    try { return JSON.stringify(obj); } catch (e) { return String(Math.random()); }
  }

  // -------------------------------------------------------------------- HTTP

  /** fetch wrapper: same origin, CSRF header on unsafe methods, JSON in and out. */
  async function api(method, path, body) {
    const headers = { accept: 'application/json' };
    const init = { method: method, headers: headers, credentials: 'same-origin', cache: 'no-store' };
    if (method !== 'GET' && method !== 'HEAD') headers['X-AgentCom-Dashboard'] = '1';
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      return { ok: false, status: 0, data: { error: 'network_error', detail: 'cannot reach the hub' } };
    }
    let data = {};
    let raw = '';
    try { raw = await res.text(); } catch (e) { raw = ''; }
    if (raw) {
      try { data = JSON.parse(raw); } catch (e) { data = { error: 'bad_response', detail: raw.slice(0, 200) }; }
    }
    if (data === null || typeof data !== 'object') data = { value: data };
    return { ok: res.ok, status: res.status, data: data };
  }

  function errorText(r) {
    const d = r.data || {};
    if (r.status === 0) return 'cannot reach the hub';
    let s = str(d.error) || ('HTTP ' + r.status);
    if (Array.isArray(d.errors) && d.errors.length) {
      s += ': ' + d.errors.map(function (e) { return str(e.field) + ' ' + str(e.detail || e.error); }).join('; ');
    } else if (d.detail) {
      s += ': ' + fmtValue(d.detail);
    } else if (d.message) {
      s += ': ' + fmtValue(d.message);
    }
    if (r.status === 429 && isNum(d.retry_after_ms)) s += ' (retry in ' + Math.ceil(d.retry_after_ms / 1000) + 's)';
    return s;
  }

  /** An API call answered 401: the cookie is gone or expired. */
  async function sessionLost() {
    const r = await api('GET', '/dashboard/session');
    if (r.ok && r.data && r.data.authenticated === false) showLogin('Session expired — log in again.');
  }

  // ------------------------------------------------------------- DOM handles

  const ui = {};

  function grabUi() {
    const ids = [
      'boot', 'login-view', 'login-form', 'login-token', 'login-submit', 'login-error',
      'dashboard', 'conn-state', 'hub-role', 'uptime', 'action-result', 'logout', 'role-badge',
      'disconnected-banner', 'disconnected-text',
      'health-banner', 'health-status', 'health-summary', 'health-conditions',
      'agents-summary', 'agents-empty', 'agents-list',
      'queue-dl-total', 'queue-oldest-wait', 'queue-oldest-blocked',
      'alerts-summary', 'alerts-empty', 'alerts-list', 'alert-log', 'alert-log-count',
      'throughput-completed', 'throughput-avg', 'throughput-tokens',
      'dl-summary', 'dl-empty', 'dl-list',
      'res-summary', 'res-empty', 'res-list', 'concurrency-empty', 'concurrency-list',
      'usage-empty', 'usage-list', 'questions-empty', 'questions-list', 'questions-summary',
      'charts-meta', 'chart-queue-depth', 'chart-latency', 'chart-utilization',
      'tasks-meta', 'tasks-filter', 'tasks-filter-status', 'tasks-filter-agent', 'tasks-refresh',
      'tasks-body', 'tasks-empty', 'tasks-more',
      'submit-form', 'submit-description', 'submit-priority', 'submit-max-retries',
      'submit-capabilities', 'submit-repo', 'submit-concurrency-key', 'submit-write-paths',
      'submit-approval', 'submit-merge', 'submit-budget-tokens', 'submit-budget-usd', 'submit-depends-on', 'submit-inputs', 'submit-fan-in', 'submit-notify',
      'submit-more', 'submit-correlation', 'submit-dedupe-key', 'submit-run-after', 'submit-stall', 'submit-max-runtime',
      'submit-read-paths', 'submit-context-keys', 'submit-metadata', 'submit-complete-by', 'submit-lease',
      'submit-max-reclaims', 'submit-blocked-policy', 'submit-blocked-requeue',
      'spend-date', 'spend-tokens', 'spend-usd', 'spend-empty', 'spend-list', 'spend-days',
      'rules-form', 'rules-text', 'rules-error', 'rules-source', 'budgets-form', 'budgets-text', 'budgets-error',
      'topics-summary', 'topics-empty', 'topics-list', 'topic-events', 'subscriptions-empty', 'subscriptions-list',
      'context-summary', 'context-empty', 'context-list', 'context-view', 'context-view-head', 'context-view-value',
      'context-history', 'context-form', 'context-key', 'context-kind', 'context-text', 'context-error',
      'submit-button', 'submit-result',
      'completions-meta', 'completions-body', 'completions-empty',
      'storage-status', 'storage-conditions', 'storage-fields', 'backup-now', 'backup-result',
      'rl-enabled', 'rl-body',
      'drawer-backdrop', 'task-detail', 'detail-title', 'detail-status', 'detail-actions', 'detail-body',
      'task-detail-close', 'toasts',
    ];
    for (const id of ids) {
      const el = document.getElementById(id);
      if (!el) throw new Error('dashboard markup is missing #' + id);
      ui[id.replace(/-([a-z])/g, function (_, c) { return c.toUpperCase(); })] = el;
    }
  }

  // --------------------------------------------------------------- rendering

  const dirty = new Set();
  let flushQueued = false;

  function mark() {
    for (const p of arguments) dirty.add(p);
    if (flushQueued) return;
    flushQueued = true;
    // rAF for smoothness; the timer keeps background tabs current (throttled).
    requestAnimationFrame(flush);
    setTimeout(flush, 250);
  }

  function markAll() {
    mark('conn', 'health', 'agents', 'queue', 'alerts', 'throughput', 'deadLetter', 'reservations', 'usage',
      'charts', 'tasks', 'completions', 'storage', 'rateLimits', 'detail');
  }

  function flush() {
    if (!flushQueued) return;
    flushQueued = false;
    const panels = Array.from(dirty);
    dirty.clear();
    for (const p of panels) {
      try {
        RENDER[p]();
      } catch (e) {
        console.error('render ' + p + ' failed', e);
      }
    }
  }

  const RENDER = {
    conn: renderConn,
    health: renderHealth,
    agents: renderAgents,
    queue: renderQueue,
    alerts: renderAlerts,
    throughput: renderThroughput,
    deadLetter: renderDeadLetter,
    reservations: renderReservations,
    usage: renderUsage,
    questions: renderQuestions,
    spend: renderSpend,
    topics: renderTopics,
    context: renderContext,
    charts: renderCharts,
    tasks: renderTasks,
    completions: renderCompletions,
    storage: renderStorage,
    rateLimits: renderRateLimits,
    detail: renderDetail,
  };

  // Header / connection ------------------------------------------------------

  function connText() {
    const c = model.conn;
    if (c.movingTo) return 'This hub stopped — moving to the active hub at ' + c.movingTo + '…';
    if (c.state === 'live') return 'Live';
    if (c.state === 'connecting') return c.everLive ? 'Disconnected — reconnecting…' : 'Connecting…';
    if (c.checking || !c.nextRetryAt) return 'Disconnected — checking session…';
    const s = Math.max(1, Math.ceil((c.nextRetryAt - Date.now()) / 1000));
    return 'Disconnected — reconnecting in ' + s + 's';
  }

  function renderConn() {
    const c = model.conn;
    const text = connText();
    ui.connState.dataset.state = c.state;
    if (ui.connState.textContent !== text) ui.connState.textContent = text;
    const showBanner = c.state !== 'live' && (c.everLive || c.state === 'disconnected');
    ui.disconnectedBanner.hidden = !showBanner;
    if (showBanner && ui.disconnectedText.textContent !== text) ui.disconnectedText.textContent = text;
    ui.dashboard.classList.toggle('is-stale', c.state !== 'live');
    const hub = model.hub;
    ui.hubRole.hidden = !(hub && hub.role === 'leader');
    if (hub && hub.role === 'leader') {
      const roleText = 'active hub · epoch ' + str(hub.epoch);
      if (ui.hubRole.textContent !== roleText) ui.hubRole.textContent = roleText;
      ui.hubRole.title = 'Postgres storage: this hub holds the leader lease' +
        (Array.isArray(hub.hub_urls) && hub.hub_urls.length ? ' (hubs: ' + hub.hub_urls.join(', ') + ')' : '');
    }
    renderUptime();
    updateTitle();
  }

  function renderUptime() {
    const t = isNum(model.uptimeMs) ? model.uptimeMs + (Date.now() - model.uptimeAt) : null;
    const text = fmtUptime(t);
    if (ui.uptime.textContent !== text) ui.uptime.textContent = text;
  }

  function updateTitle() {
    let prefix = '';
    if (model.loggedIn && model.conn.state !== 'live') prefix = '[offline] ';
    else if (model.health.status === 'critical') prefix = '[CRITICAL] ';
    else if (model.health.status === 'warning') prefix = '[warning] ';
    const t = prefix + 'AgentCom dashboard';
    if (document.title !== t) document.title = t;
  }

  let actionFlashTimer = null;

  function actionResult(text, kind, detail) {
    const el = ui.actionResult;
    el.textContent = text;
    el.dataset.kind = kind || 'info';
    if (detail) el.title = detail; else el.removeAttribute('title');
    el.classList.remove('flash');
    void el.offsetWidth; // restart the animation
    el.classList.add('flash');
    clearTimeout(actionFlashTimer);
    actionFlashTimer = setTimeout(function () { el.classList.remove('flash'); }, 1600);
  }

  function toast(text, kind) {
    const el = h('div', { class: 'toast toast-' + (kind || 'info'), role: 'status', text: text });
    ui.toasts.appendChild(el);
    while (ui.toasts.children.length > 4) ui.toasts.firstChild.remove();
    setTimeout(function () {
      el.classList.add('toast-out');
      setTimeout(function () { el.remove(); }, 400);
    }, 6000);
  }

  // Health -------------------------------------------------------------------

  function renderHealth() {
    const hl = model.health || {};
    const status = ['ok', 'warning', 'critical'].includes(hl.status) ? hl.status : 'warning';
    const conds = Array.isArray(hl.conditions) ? hl.conditions : [];
    ui.healthBanner.dataset.status = status;
    ui.healthStatus.textContent = status.toUpperCase();
    let summary;
    if (!model.haveSnapshot) summary = 'Waiting for the hub…';
    else if (!conds.length) summary = status === 'ok' ? 'All systems nominal.' : 'Degraded.';
    else summary = conds.length + (conds.length === 1 ? ' condition' : ' conditions') + ' need attention.';
    ui.healthSummary.textContent = summary;
    ui.healthConditions.replaceChildren.apply(ui.healthConditions, conds.map(function (c) {
      const kind = c.severity === 'critical' ? 'critical' : c.severity === 'info' ? 'info' : 'warning';
      return h('li', { class: 'cond cond-' + kind },
        badge(str(c.severity) || 'warning', kind === 'critical' ? 'crit' : kind === 'info' ? 'neutral' : 'warn'),
        h('span', { class: 'cond-source', text: str(c.source) }),
        c.rule_id ? h('span', { class: 'mono muted', text: c.rule_id }) : null,
        h('span', { class: 'cond-msg', text: str(c.message) }));
    }));
    updateTitle();
  }

  // Agents -------------------------------------------------------------------

  function agentOnline(a) { return a.online !== false && a.fsm_state !== 'offline'; }

  function renderAgents() {
    const list = Array.from(model.agents.values()).sort(function (a, b) {
      const oa = agentOnline(a) ? 0 : 1, ob = agentOnline(b) ? 0 : 1;
      if (oa !== ob) return oa - ob;
      return str(a.name || a.agent_id).localeCompare(str(b.name || b.agent_id)) ||
        str(a.agent_id).localeCompare(str(b.agent_id));
    });
    ui.agentsEmpty.hidden = list.length > 0;
    reconcile(ui.agentsList, list, function (a) { return a.agent_id; }, buildAgentCard, function (a) {
      const ids = Array.isArray(a.running) ? a.running.map(function (t) { return str(t.task_id); }) : [str(a.current_task_id)];
      return sig(a) + ids.map(function (id) { return progressText(model.taskProgress.get(id)); }).join('|');
    });
    let online = 0, busy = 0, idle = 0;
    for (const a of list) {
      if (!agentOnline(a)) continue;
      online++;
      if (a.fsm_state === 'idle') idle++;
      else if (a.fsm_state === 'assigned' || a.fsm_state === 'working' || a.fsm_state === 'blocked') busy++;
    }
    ui.agentsSummary.textContent = list.length
      ? online + ' online · ' + busy + ' busy · ' + idle + ' idle · ' + list.length + ' total'
      : '';
  }

  function buildAgentCard(a) {
    const online = agentOnline(a);
    const fsm = str(a.fsm_state) || 'offline';
    const flags = Array.isArray(a.flags) ? a.flags : [];
    const caps = Array.isArray(a.capabilities) ? a.capabilities : [];
    const name = str(a.name) || str(a.agent_id);
    const taskId = str(a.current_task_id);
    const slots = isNum(a.slots) ? a.slots : 1;
    const running = Array.isArray(a.running) ? a.running : [];
    const taskEl = slots > 1 ? runningList(running) : taskId
      ? h('button', {
        type: 'button', class: 'link mono agent-task', testid: 'agent-current-task',
        data: { action: 'open-task', target: taskId }, title: 'Open task ' + taskId, text: taskId,
      })
      : h('span', { class: 'agent-task mono', testid: 'agent-current-task' });
    return h('article', {
      class: 'agent-card' + (online ? '' : ' offline') + (flags.length ? ' flagged' : ''),
      testid: 'agent-card',
      data: { agentId: a.agent_id, fsmState: fsm },
    },
    h('div', { class: 'agent-head' },
      h('div', { class: 'agent-names' },
        h('span', { class: 'agent-name', title: name, text: name }),
        name !== str(a.agent_id) ? h('span', { class: 'agent-id mono', title: str(a.agent_id), text: str(a.agent_id) }) : null),
      badge(fsm, 'fsm-' + fsm)),
    a.status ? h('div', { class: 'agent-status', title: str(a.status), text: str(a.status) }) : null,
    h('dl', { class: 'agent-kv' },
      h('dt', { text: slots > 1 ? 'tasks' : 'task' }), h('dd', null, taskEl),
      slots > 1 ? h('dt', { text: 'slots' }) : null,
      slots > 1 ? h('dd', { testid: 'agent-slots' }, running.length + ' of ' + slots + ' busy' +
        (a.reserve_slot_for_standing ? ' · 1 kept for standing orders' : '')) : null,
      slots === 1 && taskId && model.taskProgress.get(taskId) ? h('dt', { text: 'progress' }) : null,
      slots === 1 && taskId && model.taskProgress.get(taskId) ? h('dd', null, progressEl(model.taskProgress.get(taskId), 'agent-progress')) : null,
      h('dt', { text: 'connected' }), h('dd', null, online && isNum(a.connected_at) ? relTime(a.connected_at) : h('span', { class: 'muted', text: '—' })),
      h('dt', { text: 'last seen' }), h('dd', null, online ? h('span', { text: 'now' }) : relTime(a.last_state_change)),
      isNum(a.paused_until) ? h('dt', { text: 'usage limit' }) : null,
      isNum(a.paused_until) ? h('dd', null, countdown(a.paused_until, 'agent-paused-until')) : null),
    caps.length ? h('div', { class: 'chips' }, caps.map(function (c) { return chip(str(c)); })) : null,
    flags.length ? h('div', { class: 'chips' }, flags.map(function (f) {
      return badge(str(f), f === 'unresponsive' ? 'crit' : 'warn', { testid: 'agent-flag' });
    })) : null);
  }

  /** Each task an agent with slots holds: a link, its state and progress. */
  function runningList(running) {
    if (!running.length) return h('span', { class: 'agent-task mono muted', testid: 'agent-running', text: 'none' });
    return h('ul', { class: 'agent-running', testid: 'agent-running' }, running.map(function (t) {
      const id = str(t.task_id);
      const p = model.taskProgress.get(id);
      return h('li', { testid: 'agent-running-task', data: { taskId: id, state: str(t.state) } },
        h('button', {
          type: 'button', class: 'link mono agent-task', data: { action: 'open-task', target: id },
          title: 'Open task ' + id, text: id,
        }),
        ' ', badge(str(t.state), 'fsm-' + str(t.state)),
        t.standing ? badge('standing', 'info') : null,
        p ? progressEl(p, 'agent-progress') : null);
    }));
  }

  /** A span the ticker keeps at "resumes in 4m 12s" until `until`. */
  function countdown(until, testid) {
    return h('span', {
      class: 'countdown text-warn', testid: testid, title: fmtAbs(until),
      data: { countdown: until }, text: countdownText(until),
    });
  }

  function countdownText(until) {
    const left = until - serverNow();
    return left > 0 ? 'resumes in ' + fmtDuration(left) : 'resuming';
  }

  // Usage limits -------------------------------------------------------------------

  function renderUsage() {
    const list = model.usage;
    ui.usageEmpty.hidden = list.length > 0;
    reconcile(ui.usageList, list, function (p) { return str(p.credential_group); }, function (p) {
      const g = str(p.credential_group);
      const busy = model.pending.has('resume:' + g);
      return h('div', { class: 'res-row', testid: 'usage-row', data: { group: g } },
        h('div', { class: 'res-main' },
          h('div', { class: 'res-line' },
            h('span', { class: 'mono res-repo', text: g }),
            countdown(p.until, 'usage-countdown')),
          h('div', { class: 'res-meta muted' },
            'reported by ', h('span', { class: 'mono', text: str(p.reported_by) }),
            p.reason ? ' · ' + str(p.reason) : null)),
        h('div', { class: 'res-actions' },
          h('button', {
            type: 'button', class: 'btn btn-small', testid: 'usage-resume-btn',
            data: { action: 'resume-usage', target: g, needs: 'steer' }, disabled: busy, text: busy ? 'Resuming…' : 'Resume now',
          })));
    }, function (p) { return sig([p, model.pending.has('resume:' + p.credential_group)]); });
  }

  // Questions ----------------------------------------------------------------------

  async function loadQuestions() {
    const r = await api('GET', '/api/questions');
    if (!r.ok || !r.data) return;
    model.questions = Array.isArray(r.data.questions) ? r.data.questions : [];
    mark('questions');
  }

  function renderQuestions() {
    const list = model.questions;
    ui.questionsEmpty.hidden = list.length > 0;
    ui.questionsSummary.textContent = list.length ? list.length + ' waiting' : '';
    reconcile(ui.questionsList, list, function (q) { return str(q.task_id); }, function (row) {
      const id = str(row.task_id);
      const q = row.question || {};
      if (q.approval) return approvalRow(row, id, q);
      if (q.budget) return budgetRow(row, id, q);
      const options = Array.isArray(q.options) ? q.options : [];
      const busy = model.pending.has('answer:' + id);
      const answerEl = options.length
        ? h('div', { class: 'chips question-options', data: { needs: 'steer' } }, options.map(function (o) {
          return h('button', {
            type: 'button', class: 'btn btn-small', testid: 'question-option',
            data: { action: 'answer', target: id, answer: str(o) }, disabled: busy, text: str(o),
          });
        }))
        : h('form', { class: 'question-form', data: { needs: 'steer', taskId: id }, testid: 'question-form' },
          h('input', { type: 'text', class: 'question-input', testid: 'question-input', maxlength: '2000',
            placeholder: q.default ? 'default: ' + str(q.default) : 'Your answer', 'aria-label': 'Answer' }),
          h('button', { type: 'submit', class: 'btn btn-small btn-primary', testid: 'question-submit', disabled: busy, text: busy ? 'Sending…' : 'Answer' }));
      return h('div', { class: 'res-row question-row', testid: 'question-row', data: { taskId: id, kind: 'question' } },
        h('div', { class: 'res-main' },
          h('div', { class: 'question-text', testid: 'question-text', text: str(q.question) }),
          h('div', { class: 'res-meta muted' },
            taskLink(id, 'mono'), ' · ', h('span', { class: 'mono', text: str(row.assigned_to) }),
            isNum(q.timeout_at) ? ' · times out ' + fmtAbs(q.timeout_at) : null,
            q.default ? ' · default ' + str(q.default) : null)),
        answerEl);
    }, function (q) { return sig([q, model.pending.has('answer:' + q.task_id)]); });
  }

  // An approval: why it is needed, the held result and its pull request, and
  // Approve / Reject (with the reason the agent works on with).
  function approvalRow(row, id, q) {
    const a = q.approval || {};
    const result = a.result && typeof a.result === 'object' ? a.result : {};
    const pr = typeof result.pr_url === 'string' && /^https?:\/\//.test(result.pr_url) ? result.pr_url : '';
    const reasons = Array.isArray(a.reasons) ? a.reasons : [];
    const busy = model.pending.has('answer:' + id);
    const stage = a.stage === 'before_start' ? 'Approve before start' : 'Review the result';
    return h('div', { class: 'res-row question-row approval-row', testid: 'question-row', data: { taskId: id, kind: 'approval' } },
      h('div', { class: 'res-main' },
        h('div', { class: 'question-text', testid: 'question-text', text: stage + ': ' + str(row.description).slice(0, 200) }),
        h('div', { class: 'res-meta muted' },
          taskLink(id, 'mono'), row.assigned_to ? ' · ' : null,
          row.assigned_to ? h('span', { class: 'mono', text: str(row.assigned_to) }) : null,
          pr ? ' · ' : null,
          pr ? h('a', { href: pr, target: '_blank', rel: 'noopener noreferrer', testid: 'approval-pr', text: pr.replace(/^https?:\/\//, '') }) : null),
        result.summary ? h('div', { class: 'approval-summary', testid: 'approval-summary', text: str(result.summary).slice(0, 500) }) : null,
        reasons.length ? h('ul', { class: 'approval-reasons muted', testid: 'approval-reasons' },
          reasons.map(function (r) { return h('li', { text: str(r) }); })) : null),
      h('div', { class: 'approval-actions', data: { needs: 'steer' } },
        h('button', { type: 'button', class: 'btn btn-small btn-primary', testid: 'approve-btn',
          data: { action: 'approve', target: id }, disabled: busy, text: busy ? 'Sending…' : 'Approve' }),
        h('form', { class: 'question-form reject-form', data: { taskId: id }, testid: 'reject-form' },
          h('input', { type: 'text', class: 'question-input reject-input', testid: 'reject-input', maxlength: '2000',
            placeholder: 'Why reject?', 'aria-label': 'Reason to reject', required: 'required' }),
          h('button', { type: 'submit', class: 'btn btn-small btn-danger', testid: 'reject-btn', disabled: busy, text: 'Reject' }))));
  }

  function fmtUsd(v) { return '$' + (isNum(v) ? v : 0).toFixed(2); }

  // A task paused over a budget: what it spent against which budget, and a
  // new budget that lets its agent resume.
  function budgetRow(row, id, q) {
    const b = q.budget || {};
    const spent = b.spent || {};
    const budget = b.budget || {};
    const busy = model.pending.has('answer:' + id);
    const limits = [];
    if (isNum(budget.tokens)) limits.push(fmtInt(spent.tokens) + ' of ' + fmtInt(budget.tokens) + ' tokens');
    if (isNum(budget.usd)) limits.push(fmtUsd(spent.cost_usd) + ' of ' + fmtUsd(budget.usd));
    const scope = str(b.scope);
    const own = scope === 'task';
    return h('div', { class: 'res-row question-row budget-row', testid: 'question-row', data: { taskId: id, kind: 'budget' } },
      h('div', { class: 'res-main' },
        h('div', { class: 'question-text', testid: 'question-text', text: 'Over budget: ' + str(row.description).slice(0, 200) }),
        h('div', { class: 'res-meta muted', testid: 'budget-spent' },
          taskLink(id, 'mono'), ' · ', h('span', { text: limits.join(', ') || 'over budget' }),
          ' · ', h('span', { class: 'mono', text: own ? 'its own budget' : scope + ' (today)' }))),
      own
        ? h('form', { class: 'question-form budget-form', data: { needs: 'steer', taskId: id }, testid: 'budget-form' },
          h('input', { type: 'text', class: 'question-input budget-tokens-input', testid: 'budget-tokens-input', inputmode: 'numeric',
            placeholder: 'tokens', 'aria-label': 'New token budget' }),
          h('input', { type: 'text', class: 'question-input budget-usd-input', testid: 'budget-usd-input', inputmode: 'decimal',
            placeholder: 'dollars', 'aria-label': 'New dollar budget' }),
          h('button', { type: 'submit', class: 'btn btn-small btn-primary', testid: 'budget-raise-btn', disabled: busy, text: busy ? 'Sending…' : 'Raise' }))
        : h('span', { class: 'muted', text: 'raise the daily budget (PUT /api/admin/budgets)' }));
  }

  async function doRaise(taskId, tokens, usd) {
    if (!taskId || model.pending.has('answer:' + taskId)) return;
    const body = {};
    if (tokens !== '') body.budget_tokens = /^\d+$/.test(tokens) ? Number(tokens) : tokens;
    if (usd !== '') body.budget_usd = isFinite(Number(usd)) ? Number(usd) : usd;
    model.pending.add('answer:' + taskId);
    mark('questions');
    const r = await api('POST', '/api/tasks/' + encodeURIComponent(taskId) + '/budget', body);
    model.pending.delete('answer:' + taskId);
    if (r.ok) {
      const status = str(r.data && r.data.task && r.data.task.status);
      actionResult('budget ' + taskId + ': ' + (status === 'input_required' ? 'still over' : 'resumed'), status === 'input_required' ? 'bad' : 'ok');
      if (status !== 'input_required') model.questions = model.questions.filter(function (q) { return q.task_id !== taskId; });
    } else {
      actionResult('budget ' + taskId + ': ' + (str(r.data && r.data.error) || 'failed'), 'bad', errorText(r));
      if (r.status === 401) sessionLost();
    }
    loadQuestions();
    loadSpend();
    mark('questions');
  }

  // Spend ---------------------------------------------------------------------------

  async function loadRules() {
    const r = await api('GET', '/api/admin/approval-rules');
    if (!r.ok || !r.data) return;
    ui.rulesSource.textContent = '(' + str(r.data.source) + ')';
    if (document.activeElement !== ui.rulesText && !ui.rulesText.dataset.dirty) {
      ui.rulesText.value = JSON.stringify(Array.isArray(r.data.rules) ? r.data.rules : [], null, 1);
    }
  }

  // Saves one of the policy editors: its JSON as the body of a PUT.
  async function savePolicy(textEl, errorEl, path, wrap, what) {
    errorEl.textContent = '';
    let parsed;
    try { parsed = JSON.parse(textEl.value); } catch (e) {
      errorEl.textContent = 'not JSON: ' + e.message;
      return;
    }
    const r = await api('PUT', path, wrap(parsed));
    if (r.ok) {
      delete textEl.dataset.dirty;
      actionResult(what + ': saved', 'ok');
      loadRules();
      loadSpend();
      return;
    }
    const errs = Array.isArray(r.data && r.data.errors) ? r.data.errors : [];
    errorEl.textContent = errs.length
      ? errs.map(function (e) { return str(e.field) + ': ' + (str(e.detail) || str(e.error)); }).join('; ')
      : str(r.data && r.data.error) || 'refused';
    actionResult(what + ': refused', 'bad', errorText(r));
    if (r.status === 401) sessionLost();
  }

  // Topics --------------------------------------------------------------------------

  let topicsTimer = null;

  async function loadTopics() {
    const r = await api('GET', '/api/topics');
    if (!r.ok || !r.data) return;
    model.topics = Array.isArray(r.data.topics) ? r.data.topics : [];
    const s = await api('GET', '/api/subscriptions');
    if (s.ok && s.data && Array.isArray(s.data.subscriptions)) model.subscriptions = s.data.subscriptions;
    mark('topics');
    if (model.topicOpen) loadTopicEvents(model.topicOpen);
  }

  async function doUnsubscribe(id) {
    if (!id || model.pending.has('unsub:' + id)) return;
    model.pending.add('unsub:' + id);
    mark('topics');
    const r = await api('DELETE', '/api/subscriptions/' + encodeURIComponent(id));
    model.pending.delete('unsub:' + id);
    if (r.ok) {
      actionResult('unsubscribe ' + id + ': deleted', 'ok');
      model.subscriptions = model.subscriptions.filter(function (s) { return s.id !== id; });
    } else {
      actionResult('unsubscribe ' + id + ': ' + (str(r.data && r.data.error) || 'failed'), 'bad', errorText(r));
      if (r.status === 401) sessionLost();
    }
    mark('topics');
  }

  async function loadTopicEvents(topic) {
    const r = await api('GET', '/api/topics/' + encodeURIComponent(topic) + '/events?newest=true&limit=20');
    if (!r.ok || !r.data) return;
    model.topicOpen = topic;
    model.topicEvents = Array.isArray(r.data.events) ? r.data.events : [];
    mark('topics');
  }

  function renderTopics() {
    const list = model.topics;
    ui.topicsEmpty.hidden = list.length > 0;
    ui.topicsSummary.textContent = list.length ? list.length + ' topics' : '';
    reconcile(ui.topicsList, list, function (t) { return str(t.topic); }, function (t) {
      const open = model.topicOpen === t.topic;
      return h('div', { class: 'res-row topic-row', testid: 'topic-row', data: { topic: str(t.topic) } },
        h('div', { class: 'res-main' },
          h('button', { type: 'button', class: 'btn btn-small mono', testid: 'topic-open',
            data: { action: 'open-topic', target: str(t.topic) }, 'aria-expanded': open ? 'true' : 'false', text: str(t.topic) }),
          h('span', { class: 'res-meta muted', testid: 'topic-count',
            text: ' ' + fmtInt(t.count) + ' events' + (isNum(t.last_published_at) ? ' · newest ' + fmtAbs(t.last_published_at) : '') })));
    }, function (t) { return sig([t, model.topicOpen === t.topic]); });
    const subs = model.subscriptions;
    ui.subscriptionsEmpty.hidden = subs.length > 0;
    reconcile(ui.subscriptionsList, subs, function (s) { return str(s.id); }, function (s) {
      const a = s.action || {};
      const what = a.task ? 'task: ' + str(a.task.description).slice(0, 120)
        : a.agent ? 'message to ' + str(a.agent) : 'channel ' + str(a.channel);
      const filter = s.filter && Object.keys(s.filter).length ? ' where ' + JSON.stringify(s.filter) : '';
      const busy = model.pending.has('unsub:' + s.id);
      return h('div', { class: 'res-row subscription-row', testid: 'subscription-row', data: { id: str(s.id) } },
        h('div', { class: 'res-main' },
          h('div', {}, h('span', { class: 'mono', text: str(s.topic) }), h('span', { text: filter + ' → ' + what })),
          h('div', { class: 'res-meta muted', testid: 'subscription-fired', text: str(s.id) + ' · fired ' + fmtInt(s.fired || 0) + ' · by ' + str(s.created_by) })),
        h('button', { type: 'button', class: 'btn btn-small btn-danger', testid: 'unsubscribe-btn',
          data: { action: 'unsubscribe', target: str(s.id), needs: 'steer' }, disabled: busy, text: busy ? 'Deleting…' : 'Delete' }));
    }, function (s) { return sig([s, model.pending.has('unsub:' + s.id)]); });
    const events = model.topicOpen ? model.topicEvents : [];
    reconcile(ui.topicEvents, events, function (e) { return str(e.id); }, function (e) {
      return h('div', { class: 'res-row topic-event', testid: 'topic-event', data: { seq: String(e.seq) } },
        h('div', { class: 'res-main' },
          h('div', { class: 'mono wrap', text: JSON.stringify(e.payload).slice(0, 300) }),
          h('div', { class: 'res-meta muted',
            text: str(e.topic) + ' · ' + str(e.publisher) + ' · ' + fmtAbs(e.published_at) + (e.dedupe_key ? ' · key ' + str(e.dedupe_key) : '') })));
    }, function (e) { return sig([e]); });
  }

  // Shared context ---------------------------------------------------------------

  async function loadContext() {
    const r = await api('GET', '/api/context');
    if (!r.ok || !r.data) return;
    model.context = Array.isArray(r.data.keys) ? r.data.keys : [];
    mark('context');
  }

  function contextText(v) {
    if (!v) return '';
    if (typeof v.text === 'string') return v.text;
    return JSON.stringify(v.value, null, 2);
  }

  /** Shows `key` (a version of it, or the newest); the newest goes in the editor. */
  async function openContext(key, version) {
    const path = '/api/context/' + encodeURIComponent(key);
    const r = await api('GET', path + (version ? '?version=' + version : ''));
    if (!r.ok || !r.data) {
      actionResult('context ' + key + ': ' + (str(r.data && r.data.error) || 'failed'), 'bad', errorText(r));
      return;
    }
    model.contextShown = r.data;
    if (!version) {
      model.contextOpen = key;
      model.contextVersion = r.data.version || 0;
      ui.contextKey.value = key;
      ui.contextKind.value = r.data.kind === 'json' ? 'json' : 'text';
      ui.contextText.value = contextText(r.data);
      ui.contextError.textContent = '';
    }
    const hr = await api('GET', path + '/history');
    model.contextHistory = hr.ok && hr.data && Array.isArray(hr.data.versions) ? hr.data.versions : [];
    mark('context');
  }

  async function saveContext() {
    const key = ui.contextKey.value.trim();
    ui.contextError.textContent = '';
    if (!key) { ui.contextError.textContent = 'a key is needed'; return; }
    const body = {};
    if (ui.contextKind.value === 'json') {
      try { body.value = JSON.parse(ui.contextText.value); } catch (e) {
        ui.contextError.textContent = 'not JSON: ' + e.message;
        return;
      }
    } else {
      body.text = ui.contextText.value;
    }
    // Compare-and-set: the version this editor read, or "must not exist".
    body.if_version = model.contextOpen === key ? model.contextVersion : 0;
    const r = await api('PUT', '/api/context/' + encodeURIComponent(key), body);
    if (r.ok && r.data) {
      // The editor now holds what it wrote: the next save sets from there.
      model.contextOpen = key;
      model.contextVersion = r.data.version || 0;
      await loadContext();
      await openContext(key, model.contextVersion);
      actionResult('context ' + key + ': version ' + r.data.version, 'ok');
      return;
    }
    const d = r.data || {};
    if (r.status === 409 && d.error === 'version_conflict') {
      ui.contextError.textContent = 'changed meanwhile: now at version ' + d.current_version + ' (open it again to see the change)';
    } else if (r.status === 422 && Array.isArray(d.errors)) {
      ui.contextError.textContent = d.errors.map(function (e) { return str(e.field) + ': ' + str(e.detail || e.error); }).join('; ');
    } else {
      ui.contextError.textContent = str(d.error) || 'refused';
    }
    actionResult('context ' + key + ': ' + (str(d.error) || 'refused'), 'bad', errorText(r));
    if (r.status === 401) sessionLost();
  }

  async function deleteContext() {
    const key = ui.contextKey.value.trim();
    if (!key || model.contextOpen !== key) { ui.contextError.textContent = 'open the key first'; return; }
    const r = await api('DELETE', '/api/context/' + encodeURIComponent(key) + '?if_version=' + model.contextVersion);
    if (r.ok) {
      actionResult('context ' + key + ': deleted', 'ok');
      model.contextOpen = null;
      model.contextShown = null;
      model.contextHistory = [];
      ui.contextText.value = '';
      await loadContext();
      return;
    }
    const d = r.data || {};
    ui.contextError.textContent = d.error === 'version_conflict'
      ? 'changed meanwhile: now at version ' + d.current_version : str(d.error) || 'refused';
    if (r.status === 401) sessionLost();
  }

  function renderContext() {
    const list = model.context;
    ui.contextEmpty.hidden = list.length > 0;
    ui.contextSummary.textContent = list.length ? list.length + ' keys' : '';
    reconcile(ui.contextList, list, function (c) { return str(c.key); }, function (c) {
      return h('div', { class: 'res-row context-row', testid: 'context-row', data: { key: str(c.key) } },
        h('div', { class: 'res-main' },
          h('button', { type: 'button', class: 'btn btn-small mono', testid: 'context-open',
            data: { action: 'open-context', target: str(c.key) }, text: str(c.key) }),
          h('span', { class: 'res-meta muted', testid: 'context-version',
            text: ' v' + fmtInt(c.version) + ' · ' + str(c.kind) + ' · ' + fmtInt(c.size) + ' bytes · ' + str(c.updated_by) + ' · ' + fmtAbs(c.updated_at) })));
    }, function (c) { return sig([c]); });
    const shown = model.contextShown;
    ui.contextView.hidden = !shown;
    if (shown) {
      ui.contextViewHead.textContent = str(shown.key) + ' · version ' + shown.version + ' · ' + str(shown.updated_by) + ' · ' + fmtAbs(shown.updated_at);
      ui.contextViewValue.textContent = contextText(shown);
    }
    const key = model.contextOpen;
    reconcile(ui.contextHistory, model.contextHistory, function (v) { return String(v.version); }, function (v) {
      return h('div', { class: 'res-row', testid: 'context-history-row', data: { version: String(v.version) } },
        h('button', { type: 'button', class: 'btn btn-small', testid: 'context-version-open',
          data: { action: 'open-context-version', target: str(key), version: String(v.version) },
          text: 'v' + v.version + (v.deleted ? ' (deleted)' : '') }),
        h('span', { class: 'res-meta muted', text: ' ' + str(v.updated_by) + ' · ' + fmtAbs(v.updated_at) }));
    }, function (v) { return sig([v, key]); });
  }

  async function loadSpend() {
    const r = await api('GET', '/api/spend');
    if (!r.ok || !r.data) return;
    model.spend = r.data;
    mark('spend');
  }

  function renderSpend() {
    const s = model.spend || {};
    const today = s.today || {};
    const total = today.total || {};
    ui.spendDate.textContent = str(s.date);
    ui.spendTokens.textContent = fmtInt(total.tokens || 0);
    ui.spendUsd.textContent = fmtUsd(total.cost_usd);
    const budgets = s.budgets || {};
    const rows = [];
    const add = function (kind, map, limits) {
      if (!map || typeof map !== 'object') return;
      for (const name of Object.keys(map)) {
        rows.push({ kind: kind, name: name, spent: map[name] || {}, budget: (limits && limits[name]) || null });
      }
    };
    add('agent', today.agents, budgets.agents);
    add('group', today.groups, budgets.groups);
    add('capability', today.capabilities, null);
    ui.spendEmpty.hidden = rows.length > 0;
    const days = Array.isArray(s.days) ? s.days.slice(0, 8) : [];
    ui.spendDays.textContent = days.length > 1 ? 'By day: ' + days.map(function (d) {
      const sp = d.spent || {};
      return str(d.date) + ' ' + fmtInt(sp.tokens || 0) + ' tokens, ' + fmtUsd(sp.cost_usd);
    }).join(' · ') : '';
    // The budgets editor follows the hub unless someone is typing in it.
    if (document.activeElement !== ui.budgetsText && !ui.budgetsText.dataset.dirty) {
      ui.budgetsText.value = JSON.stringify({ agents: budgets.agents || {}, groups: budgets.groups || {} }, null, 1);
    }
    reconcile(ui.spendList, rows, function (r) { return r.kind + ':' + r.name; }, function (r) {
      const sp = r.spend || r.spent;
      let limit = '';
      if (r.budget) {
        const parts = [];
        if (isNum(r.budget.tokens)) parts.push(fmtInt(r.budget.tokens) + ' tokens');
        if (isNum(r.budget.usd)) parts.push(fmtUsd(r.budget.usd));
        limit = ' · daily budget ' + parts.join(', ');
      }
      return h('div', { class: 'res-row spend-row', testid: 'spend-row', data: { kind: r.kind, name: r.name } },
        h('div', { class: 'res-main' },
          h('div', {}, h('span', { class: 'muted', text: r.kind + ' ' }), h('span', { class: 'mono', text: r.name })),
          h('div', { class: 'res-meta muted', testid: 'spend-amount', text: fmtInt(sp.tokens || 0) + ' tokens · ' + fmtUsd(sp.cost_usd) + limit })));
    }, function (r) { return sig([r]); });
  }

  async function doDecide(taskId, approve, reason) {
    if (!taskId || model.pending.has('answer:' + taskId)) return;
    const verb = approve ? 'approve' : 'reject';
    model.pending.add('answer:' + taskId);
    mark('questions');
    const r = await api('POST', '/api/tasks/' + encodeURIComponent(taskId) + '/' + verb, approve ? {} : { reason: reason });
    model.pending.delete('answer:' + taskId);
    if (r.ok) {
      actionResult(verb + ' ' + taskId + ': sent', 'ok');
      model.questions = model.questions.filter(function (q) { return q.task_id !== taskId; });
    } else {
      actionResult(verb + ' ' + taskId + ': ' + (str(r.data && r.data.error) || 'failed'), 'bad', errorText(r));
      if (r.status === 401) sessionLost();
      loadQuestions();
    }
    mark('questions');
  }

  async function doAnswer(taskId, answer) {
    if (!taskId || !answer || model.pending.has('answer:' + taskId)) return;
    model.pending.add('answer:' + taskId);
    mark('questions');
    const r = await api('POST', '/api/tasks/' + encodeURIComponent(taskId) + '/answer', { answer: answer });
    model.pending.delete('answer:' + taskId);
    if (r.ok) {
      actionResult('answer ' + taskId + ': sent', 'ok');
      model.questions = model.questions.filter(function (q) { return q.task_id !== taskId; });
    } else {
      actionResult('answer ' + taskId + ': ' + (str(r.data && r.data.error) || 'failed'), 'bad', errorText(r));
      if (r.status === 401) sessionLost();
      loadQuestions();
    }
    mark('questions');
  }

  async function doResumeUsage(group) {
    if (!group || model.pending.has('resume:' + group)) return;
    model.pending.add('resume:' + group);
    mark('usage');
    const r = await api('POST', '/api/usage/' + encodeURIComponent(group) + '/resume', {});
    model.pending.delete('resume:' + group);
    if (r.ok) {
      actionResult('resume ' + group + ': resumed', 'ok');
      model.usage = model.usage.filter(function (p) { return p.credential_group !== group; });
    } else {
      actionResult('resume ' + group + ': ' + (str(r.data.error) || 'failed'), 'bad', errorText(r));
      if (r.status === 401) sessionLost();
      requestSnapshotSoon();
    }
    mark('usage');
  }

  // Queue ----------------------------------------------------------------------

  function renderQueue() {
    const q = model.queue || {};
    const bs = q.by_status || {};
    const bp = q.by_priority || {};
    for (const el of document.querySelectorAll('[data-status-count]')) {
      const v = bs[el.dataset.statusCount];
      el.textContent = countText(v);
    }
    for (const el of document.querySelectorAll('[data-priority-count]')) {
      const v = bp[el.dataset.priorityCount];
      el.textContent = countText(v);
    }
    ui.queueDlTotal.textContent = countText(q.dead_letter);
    showAge(ui.queueOldestWait, q.oldest_queued_age_ms);
    showAge(ui.queueOldestBlocked, q.oldest_blocked_age_ms);
    const keys = model.concurrency;
    ui.concurrencyEmpty.hidden = keys.length > 0;
    reconcile(ui.concurrencyList, keys, function (k) { return str(k.key); }, function (k) {
      const full = isNum(k.limit) && k.running >= k.limit;
      return h('li', { class: 'conc-row' + (full ? ' text-warn' : ''), testid: 'concurrency-row', data: { key: str(k.key), full: String(full) } },
        h('span', { class: 'mono conc-key', text: str(k.key) }),
        h('span', { class: 'conc-count', testid: 'concurrency-count',
          text: countText(k.running) + ' / ' + (isNum(k.limit) ? String(k.limit) : '∞') }));
    }, function (k) { return sig(k); });
  }

  function keyRows(list) {
    return (Array.isArray(list) ? list : []).filter(function (k) { return k && typeof k.key === 'string'; }).slice(0, LIST_CAP);
  }

  /** How long ago a server time was (ms), or null. */
  function ageOf(since) {
    return isNum(since) ? Math.max(0, serverNow() - since) : null;
  }

  /** An age (ms) as text, with the number in data-ms ('' when there is none). */
  function showAge(el, ms) {
    el.textContent = fmtDuration(ms);
    el.dataset.ms = isNum(ms) ? String(Math.round(ms)) : '';
  }

  // Throughput -----------------------------------------------------------------

  function renderThroughput() {
    const t = model.throughput || {};
    ui.throughputCompleted.textContent = countText(t.completed_last_hour);
    ui.throughputAvg.textContent = fmtDuration(t.avg_completion_ms);
    ui.throughputAvg.dataset.ms = isNum(t.avg_completion_ms) ? String(Math.round(t.avg_completion_ms)) : '';
    ui.throughputAvg.title = isNum(t.avg_completion_ms) ? Math.round(t.avg_completion_ms) + ' ms' : '';
    ui.throughputTokens.textContent = countText(t.total_tokens_hour);
  }

  // Alerts -----------------------------------------------------------------------

  function renderAlerts() {
    const sevRank = function (s) { return s === 'critical' ? 0 : 1; };
    const list = Array.from(model.alerts.values()).sort(function (a, b) {
      if (!!a.acknowledged !== !!b.acknowledged) return a.acknowledged ? 1 : -1;
      if (sevRank(a.severity) !== sevRank(b.severity)) return sevRank(a.severity) - sevRank(b.severity);
      return (b.fired_at || 0) - (a.fired_at || 0);
    });
    ui.alertsEmpty.hidden = list.length > 0;
    reconcile(ui.alertsList, list, function (a) { return a.rule_id; }, buildAlertRow, function (a) {
      return sig([a, model.pending.has('ack:' + a.rule_id)]);
    });
    const unacked = list.filter(function (a) { return !a.acknowledged; }).length;
    ui.alertsSummary.textContent = list.length ? list.length + ' active · ' + unacked + ' unacknowledged' : '';

    const log = model.alertLog.slice(0, ALERT_LOG_SHOWN);
    ui.alertLogCount.textContent = model.alertLog.length ? '(' + model.alertLog.length + ')' : '';
    ui.alertLog.replaceChildren.apply(ui.alertLog, log.length ? log.map(function (e) {
      return h('li', { class: 'alert-log-entry' },
        relTime(e.at, 'log-time'),
        badge(str(e.kind), 'kind-' + str(e.kind)),
        e.severity ? badge(str(e.severity), e.severity === 'critical' ? 'crit' : 'warn') : null,
        h('span', { class: 'mono', text: str(e.rule_id) }),
        h('span', { class: 'log-msg', text: str(e.message) }));
    }) : [h('li', { class: 'empty', text: 'No alert events.' })]);
  }

  function buildAlertRow(a) {
    const acked = !!a.acknowledged;
    const pending = model.pending.has('ack:' + a.rule_id);
    const sev = a.severity === 'critical' ? 'critical' : a.severity === 'info' ? 'info' : 'warning';
    const details = a.details === undefined || a.details === null ||
      (typeof a.details === 'object' && !Array.isArray(a.details) && !Object.keys(a.details).length)
      ? null : fmtValue(a.details);
    return h('li', {
      class: 'alert-row alert-' + sev + (acked ? ' acked' : ''),
      testid: 'alert-row',
      data: { ruleId: a.rule_id, acknowledged: acked ? 'true' : 'false', severity: sev },
    },
    h('div', { class: 'alert-main' },
      h('div', { class: 'alert-line' },
        badge(sev, sev === 'critical' ? 'crit' : 'warn'),
        h('span', { class: 'mono alert-rule', text: str(a.rule_id) })),
      h('div', { class: 'alert-msg', text: str(a.message) }),
      details ? h('div', { class: 'alert-details muted', title: details, text: details }) : null,
      h('div', { class: 'alert-meta muted' },
        'fired ', relTime(a.fired_at),
        acked ? [' · acknowledged ', isNum(a.acknowledged_at) ? relTime(a.acknowledged_at) : ''] : null)),
    h('button', {
      type: 'button', class: 'btn btn-small', testid: 'ack-btn',
      data: { action: 'ack', target: a.rule_id, needs: 'steer' },
      hidden: acked, disabled: acked || pending,
      text: pending ? 'Acking…' : 'Acknowledge',
    }));
  }

  // Dead letter ------------------------------------------------------------------

  function renderDeadLetter() {
    const list = model.deadLetter;
    ui.dlEmpty.hidden = list.length > 0;
    ui.dlSummary.textContent = list.length ? list.length + (list.length >= LIST_CAP ? '+' : '') + ' shown' : '';
    reconcile(ui.dlList, list, function (t) { return t.id; }, buildDeadLetterRow, function (t) {
      return sig([t, model.pending.has('retry:' + t.id), model.pending.has('cancel:' + t.id)]);
    });
  }

  function buildDeadLetterRow(t) {
    const retrying = model.pending.has('retry:' + t.id);
    const cancelling = model.pending.has('cancel:' + t.id);
    const busy = retrying || cancelling;
    return h('div', { class: 'dl-row', testid: 'dead-letter-row', data: { taskId: t.id } },
      h('div', { class: 'dl-main' },
        h('div', { class: 'dl-line' },
          taskLink(t.id, 'dl-id'),
          isNum(t.priority) ? chip(priorityName(t.priority), 'prio-' + t.priority) : null,
          h('span', { class: 'muted dl-when' }, relTime(t.updated_at))),
        h('div', { class: 'dl-desc', title: str(t.description), text: str(t.description) || '(no description)' }),
        t.last_error ? h('div', { class: 'dl-error mono', title: str(t.last_error), text: str(t.last_error) }) : null,
        h('div', { class: 'dl-meta muted', text:
          'attempts ' + str(isNum(t.attempt) ? t.attempt : '?') +
          ' · retries ' + str(isNum(t.retry_count) ? t.retry_count : '?') + '/' + str(isNum(t.max_retries) ? t.max_retries : '?') +
          (t.assigned_to ? ' · last agent ' + t.assigned_to : '') })),
      h('div', { class: 'dl-actions' },
        h('button', {
          type: 'button', class: 'btn btn-small', testid: 'retry-btn',
          data: { action: 'retry', target: t.id, needs: 'steer' }, disabled: busy, text: retrying ? 'Retrying…' : 'Retry',
        }),
        h('button', {
          type: 'button', class: 'btn btn-small btn-danger', testid: 'cancel-btn',
          data: { action: 'cancel', target: t.id, needs: 'steer' }, disabled: busy, text: cancelling ? 'Cancelling…' : 'Cancel',
        })));
  }

  // Reserved paths ---------------------------------------------------------------

  function claimRows(list) {
    return (Array.isArray(list) ? list : []).filter(function (c) {
      return c && typeof c === 'object' && (c.reservation_id || c.task_id);
    }).slice(0, LIST_CAP);
  }

  function claimKey(c) { return c.kind === 'reservation' ? str(c.reservation_id) : 'task:' + str(c.task_id); }

  function renderReservations() {
    const list = model.reservations;
    ui.resEmpty.hidden = list.length > 0;
    const direct = list.filter(function (c) { return c.kind === 'reservation'; }).length;
    ui.resSummary.textContent = list.length
      ? direct + ' reserved · ' + (list.length - direct) + ' held by running tasks' : '';
    reconcile(ui.resList, list, claimKey, buildClaimRow, function (c) {
      return sig([c, model.pending.has('release:' + c.reservation_id)]);
    });
  }

  function buildClaimRow(c) {
    const reservation = c.kind === 'reservation';
    const releasing = reservation && model.pending.has('release:' + c.reservation_id);
    const globs = function (list) { return (Array.isArray(list) ? list : []).map(function (g) { return chip(str(g)); }); };
    return h('div', {
      class: 'res-row', testid: 'reservation-row',
      data: { kind: str(c.kind), reservationId: str(c.reservation_id), taskId: str(c.task_id), repo: str(c.repo) },
    },
      h('div', { class: 'res-main' },
        h('div', { class: 'res-line' },
          h('span', { class: 'mono res-repo', text: str(c.repo) }),
          reservation ? badge(str(c.mode) || 'exclusive', c.mode === 'shared' ? 'neutral' : 'warn') : badge('task scope', 'neutral'),
          h('span', { class: 'chips res-paths', testid: 'reservation-paths' }, globs(c.paths)),
          Array.isArray(c.read_paths) && c.read_paths.length
            ? h('span', { class: 'chips muted' }, [h('span', { text: 'reads' })].concat(globs(c.read_paths))) : null),
        h('div', { class: 'res-meta muted' },
          'held by ', h('span', { class: 'mono', testid: 'reservation-holder', text: str(c.holder) }),
          c.task_id ? [' · task ', taskLink(c.task_id, 'res-task')] : null,
          reservation ? [' · expires ', relTime(c.expires_at, 'res-expiry')] : null)),
      reservation ? h('div', { class: 'res-actions' },
        h('button', {
          type: 'button', class: 'btn btn-small', testid: 'release-btn',
          data: { action: 'release', target: str(c.reservation_id), needs: 'admin' },
          disabled: releasing, text: releasing ? 'Releasing…' : 'Release',
        })) : null);
  }

  async function doRelease(id) {
    if (!id || model.pending.has('release:' + id)) return;
    model.pending.add('release:' + id);
    mark('reservations');
    const r = await api('DELETE', '/api/reservations/' + encodeURIComponent(id));
    model.pending.delete('release:' + id);
    if (r.ok) {
      actionResult('release ' + id + ': released', 'ok');
      model.reservations = model.reservations.filter(function (c) { return c.reservation_id !== id; });
    } else {
      actionResult('release ' + id + ': ' + (str(r.data.error) || 'failed'), 'bad', errorText(r));
      if (r.status === 401) sessionLost();
      requestSnapshotSoon();
    }
    mark('reservations');
  }

  // Charts -----------------------------------------------------------------------

  function renderCharts() {
    const C = window.AgentComCharts;
    if (!C || !model.loggedIn || ui.dashboard.hidden) return;
    const pts = model.charts.points;
    const series = function (key, scale) {
      return pts.map(function (p) {
        const v = p[key];
        return [p.t, isNum(v) ? v * (scale || 1) : null];
      });
    };
    C.line(ui.chartQueueDepth, [{ label: 'queued', data: series('queue_depth'), className: 's0' }], {
      yMin: 0, integer: true, formatY: function (v) { return fmtInt(v); }, title: 'Queue depth',
    });
    C.line(ui.chartLatency, [
      { label: 'p50', data: series('p50'), className: 's1' },
      { label: 'p90', data: series('p90'), className: 's2' },
      { label: 'p99', data: series('p99'), className: 's3' },
    ], { yMin: 0, formatY: fmtDurationShort, title: 'Task latency' });
    C.line(ui.chartUtilization, [{ label: 'busy', data: series('utilization', 100), className: 's4' }], {
      yMin: 0, yMax: 100, formatY: function (v) { return Math.round(v) + '%'; }, title: 'Agent utilization',
    });
    const iv = model.charts.interval_ms;
    ui.chartsMeta.textContent = pts.length
      ? pts.length + ' points' + (isNum(iv) && iv > 0 ? ' · every ' + fmtDurationShort(iv) : '')
      : '';
  }

  // Tasks table --------------------------------------------------------------------

  function renderTasks() {
    const t = model.tasks;
    reconcile(ui.tasksBody, t.rows, function (r) { return r.id; }, buildTaskRow, sig);
    ui.tasksEmpty.hidden = t.loading || !!t.error || t.rows.length > 0;
    ui.tasksMore.hidden = t.nextCursor === null || t.nextCursor === undefined;
    ui.tasksMore.disabled = t.loading;
    let meta;
    if (t.loading) meta = 'loading…';
    else if (t.error) meta = 'failed: ' + t.error;
    else meta = t.rows.length + (t.rows.length === 1 ? ' task' : ' tasks') + (ui.tasksMore.hidden ? '' : ' · more available');
    ui.tasksMeta.textContent = meta;
    ui.tasksMeta.classList.toggle('text-bad', !!t.error);
  }

  function buildTaskRow(r) {
    return h('tr', {
      class: 'task-row row-click', testid: 'task-row', tabindex: '0',
      data: { taskId: r.id, status: r.status, action: 'open-task' },
    },
    h('td', { class: 'mono cell-id', title: r.id, text: r.id }),
    h('td', null, statusBadge(r.status), progressEl(r.progress, 'task-progress'), waitingEl(r)),
    h('td', { class: 'col-opt' }, isNum(r.priority) || typeof r.priority === 'string' ? chip(priorityName(r.priority), 'prio-' + r.priority) : ''),
    h('td', { class: 'mono cell-agent', title: str(r.assigned_to), text: str(r.assigned_to) || '—' }),
    h('td', { class: 'cell-desc', title: str(r.description), text: str(r.description) }),
    h('td', { class: 'col-opt cell-time' }, relTime(r.updated_at)));
  }

  // A queued task held back by overlapping paths: who it waits for.
  function waitingEl(r) {
    const w = r.status === 'queued' && r.waiting_on_scope;
    if (!w || typeof w !== 'object') return null;
    const whom = w.reservation_id ? 'reservation ' + str(w.reservation_id) : str(w.task_id);
    return h('span', {
      class: 'progress-note text-warn', testid: 'task-waiting-scope',
      title: 'waits for ' + whom + ' (' + str(w.agent_id) + '): overlapping paths',
      text: 'waits for paths',
    });
  }

  // The holder's latest progress: "42% · message", or nothing.
  function progressText(p) {
    if (!p || typeof p !== 'object') return '';
    const parts = [];
    if (isNum(p.percent)) parts.push(p.percent + '%');
    if (typeof p.message === 'string' && p.message) parts.push(p.message);
    return parts.join(' · ');
  }

  function progressEl(p, testid) {
    const text = progressText(p);
    if (!text) return null;
    return h('span', {
      class: 'progress-note', testid: testid, title: text, text: text,
      data: { percent: p && isNum(p.percent) ? String(p.percent) : '' },
    });
  }

  function taskRowFrom(t) {
    return {
      progress: t.progress || null,
      id: str(t.id),
      status: str(t.status),
      priority: t.priority,
      assigned_to: t.assigned_to || null,
      description: str(t.description),
      created_at: t.created_at,
      updated_at: t.updated_at,
      waiting_on_scope: t.waiting_on_scope && typeof t.waiting_on_scope === 'object' ? t.waiting_on_scope : null,
    };
  }

  let tasksReq = 0;
  let tasksAgentTimer = null;

  async function loadTasks(append) {
    const t = model.tasks;
    const status = ui.tasksFilterStatus.value;
    const agent = ui.tasksFilterAgent.value.trim();
    const params = new URLSearchParams();
    if (status) params.set('status', status);
    if (agent) params.set('assigned_to', agent);
    params.set('limit', '50');
    if (append && t.nextCursor !== null && t.nextCursor !== undefined) params.set('cursor', String(t.nextCursor));
    else append = false;
    const req = ++tasksReq;
    t.loading = true;
    t.error = null;
    t.filter = { status: status, agent: agent };
    mark('tasks');
    const r = await api('GET', '/api/tasks?' + params.toString());
    if (req !== tasksReq) return; // a newer load superseded this one
    t.loading = false;
    if (!r.ok) {
      t.error = errorText(r);
      mark('tasks');
      if (r.status === 401) sessionLost();
      return;
    }
    const rows = (Array.isArray(r.data.tasks) ? r.data.tasks : []).map(taskRowFrom);
    if (!append) { t.rows = []; t.byId = new Map(); }
    for (const row of rows) {
      if (t.byId.has(row.id)) continue;
      t.rows.push(row);
      t.byId.set(row.id, row);
    }
    t.nextCursor = r.data.next_cursor === undefined ? null : r.data.next_cursor;
    t.loadedAt = Date.now();
    mark('tasks');
  }

  /** Show a task submitted from this page at once (its `queued` event may come later). */
  function addSubmittedRow(id, body, answer) {
    const t = model.tasks;
    if (!id || t.byId.has(id) || !t.loadedAt) return;
    const status = model.taskStatus.get(id) || 'queued';
    if (!filterMatchesNew(status)) return;
    const created = isNum(answer.created_at) ? answer.created_at : serverNow();
    const prio = PRIORITY_NAMES.indexOf(str(answer.priority || body.priority));
    const row = {
      id: id, status: status, priority: prio >= 0 ? prio : answer.priority, assigned_to: null,
      description: body.description, created_at: created, updated_at: created,
    };
    t.rows.unshift(row);
    t.byId.set(id, row);
    mark('tasks');
  }

  function filterMatchesNew(status) {
    const f = model.tasks.filter || { status: '', agent: '' };
    return (!f.status || f.status === status) && !f.agent;
  }

  // Completions ---------------------------------------------------------------------

  function renderCompletions() {
    const list = model.completions;
    ui.completionsEmpty.hidden = list.length > 0;
    ui.completionsMeta.textContent = list.length ? list.length + ' shown' : '';
    reconcile(ui.completionsBody, list, function (c) { return c.task_id; }, buildCompletionRow, sig);
  }

  function buildCompletionRow(c) {
    const url = safeHttpUrl(c.pr_url);
    let pr;
    if (url) {
      pr = h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', class: 'pr-link', title: url, text: prLabel(url) });
    } else if (c.pr_url) {
      pr = h('span', { class: 'muted', title: str(c.pr_url), text: 'invalid link' });
    } else {
      pr = h('span', { class: 'muted', text: '—' });
    }
    return h('tr', { class: 'completion-row', testid: 'completion-row', data: { taskId: c.task_id } },
      h('td', { class: 'cell-task' },
        taskLink(str(c.task_id), 'cell-id'),
        h('div', { class: 'cell-desc small', title: str(c.description), text: str(c.description) })),
      h('td', { class: 'mono cell-agent', title: str(c.agent_id), text: str(c.agent_id) || '—' }),
      h('td', { class: 'num', text: fmtDuration(c.duration_ms) }),
      h('td', { class: 'num col-opt', text: isNum(c.tokens_used) ? fmtInt(c.tokens_used) : '—' }),
      h('td', null, pr),
      h('td', { class: 'col-opt cell-time' }, relTime(c.completed_at)));
  }

  function prLabel(url) {
    const m = /\/pull\/(\d+)/.exec(url) || /\/merge_requests\/(\d+)/.exec(url);
    return m ? 'PR #' + m[1] : 'link';
  }

  // Storage --------------------------------------------------------------------------

  function renderStorage() {
    const s = model.storage;
    if (!s) {
      ui.storageStatus.textContent = '—';
      ui.storageStatus.className = 'badge';
      ui.storageConditions.replaceChildren();
      ui.storageFields.replaceChildren();
      return;
    }
    const ok = s.status === 'ok';
    ui.storageStatus.textContent = str(s.status) || '?';
    ui.storageStatus.className = 'badge badge-' + (ok ? 'ok' : 'warn');
    ui.storageStatus.dataset.status = str(s.status);
    const conds = Array.isArray(s.conditions) ? s.conditions : [];
    ui.storageConditions.replaceChildren.apply(ui.storageConditions, conds.map(function (c) {
      return h('li', { class: 'cond cond-warning', text: fmtValue(c) });
    }));
    const b = s.backup || {};
    const rows = [];
    const add = function (label, value, cls) { rows.push(h('dt', { text: label }), h('dd', { class: cls || '' }, value)); };
    add('size', fmtBytes(s.store_bytes));
    add('records', isNum(s.records) ? fmtInt(s.records) : fmtValue(s.records));
    add('last backup', isNum(b.last_backup_at)
      ? [h('span', { text: fmtClock(b.last_backup_at) + ' · ' }), relTime(b.last_backup_at)]
      : 'never');
    if (b.last_backup_file) add('backup file', h('span', { class: 'mono wrap', text: str(b.last_backup_file) }));
    if (isNum(b.count)) add('backups', fmtInt(b.count));
    if (b.last_error) add('backup error', h('span', { class: 'text-bad wrap', text: fmtValue(b.last_error) }));
    const comp = s.compaction || {};
    add('last compaction', isNum(comp.last_compaction_at) ? relTime(comp.last_compaction_at) : 'never');
    const ar = s.archive || {};
    if (isNum(ar.tasks)) {
      add('archived', h('span', { testid: 'storage-archived',
        text: fmtInt(ar.tasks) + ' tasks · ' + fmtInt(ar.standing_runs || 0) + ' runs · ' + fmtInt(ar.files || 0) + ' files · ' + fmtBytes(ar.bytes || 0) }));
    }
    // Any other scalar fields the hub adds.
    const known = new Set(['status', 'conditions', 'store_bytes', 'records', 'backup', 'compaction', 'archive']);
    for (const k of Object.keys(s)) {
      if (known.has(k)) continue;
      const v = s[k];
      if (v === null || typeof v === 'object') continue;
      add(k.replace(/_/g, ' '), /_at$/.test(k) && isNum(v) ? relTime(v)
        : /bytes$/.test(k) && isNum(v) ? fmtBytes(v)
          : /_ms$/.test(k) && isNum(v) ? fmtDuration(v) : fmtValue(v));
    }
    ui.storageFields.replaceChildren.apply(ui.storageFields, rows);
    ui.backupNow.disabled = model.backupRunning;
    ui.backupNow.textContent = model.backupRunning ? 'Backing up…' : 'Backup now';
  }

  async function doBackup() {
    if (model.backupRunning) return;
    model.backupRunning = true;
    ui.backupResult.textContent = 'Backup running…';
    ui.backupResult.dataset.kind = 'info';
    mark('storage');
    const r = await api('POST', '/api/admin/backup');
    model.backupRunning = false;
    mark('storage');
    if (r.ok) {
      const d = r.data;
      const parts = [];
      if (isNum(d.size_bytes)) parts.push(fmtBytes(d.size_bytes));
      if (d.records !== undefined) parts.push((isNum(d.records) ? fmtInt(d.records) : fmtValue(d.records)) + ' records');
      if (d.sha256) parts.push('sha256 ' + str(d.sha256).slice(0, 12) + '…');
      ui.backupResult.textContent = 'Backup ' + (str(d.status) || 'complete') + ': ' + str(d.path) +
        (parts.length ? ' (' + parts.join(', ') + ')' : '');
      ui.backupResult.dataset.kind = 'ok';
      actionResult('backup: ' + (str(d.status) || 'complete'), 'ok', str(d.path));
      requestSnapshotSoon();
    } else {
      ui.backupResult.textContent = 'Backup failed: ' + errorText(r);
      ui.backupResult.dataset.kind = 'bad';
      actionResult('backup: ' + (str(r.data.error) || 'failed'), 'bad');
      if (r.status === 401) sessionLost();
    }
  }

  // Rate limits ----------------------------------------------------------------------

  function renderRateLimits() {
    const rl = model.rateLimits;
    if (!rl) {
      ui.rlEnabled.textContent = '—';
      ui.rlEnabled.className = 'badge';
      ui.rlBody.replaceChildren();
      return;
    }
    ui.rlEnabled.textContent = rl.enabled ? 'enabled' : 'disabled';
    ui.rlEnabled.className = 'badge badge-' + (rl.enabled ? 'ok' : 'neutral');
    const d = rl.defaults || {};
    const tiers = ['light', 'normal', 'heavy'];
    const parts = [];
    parts.push(h('h3', { class: 'sub-h', text: 'Defaults (per minute)' }));
    parts.push(h('div', { class: 'tiles tiles-3' }, tiers.map(function (k) {
      return h('div', { class: 'tile' }, h('span', { class: 'tile-label', text: k }),
        h('span', { class: 'tile-num small-num', text: isNum(d[k]) ? fmtInt(d[k]) : '—' }));
    })));

    const ov = rl.overrides && typeof rl.overrides === 'object' ? rl.overrides : {};
    const ovKeys = Object.keys(ov).sort();
    parts.push(h('h3', { class: 'sub-h', text: 'Overrides' }));
    if (ovKeys.length) {
      parts.push(h('div', { class: 'table-wrap' }, h('table', { class: 'table compact' },
        h('thead', null, h('tr', null, h('th', { text: 'agent' }), tiers.map(function (k) { return h('th', { class: 'num', text: k }); }))),
        h('tbody', null, ovKeys.map(function (agent) {
          const o = ov[agent] || {};
          return h('tr', null, h('td', { class: 'mono', text: agent }), tiers.map(function (k) {
            return h('td', { class: 'num', text: isNum(o[k]) ? fmtInt(o[k]) : '—' });
          }));
        })))));
    } else {
      parts.push(h('p', { class: 'empty', text: 'None.' }));
    }

    const wl = Array.isArray(rl.whitelist) ? rl.whitelist : [];
    parts.push(h('h3', { class: 'sub-h', text: 'Whitelist' }));
    parts.push(wl.length ? h('div', { class: 'chips' }, wl.map(function (w) { return chip(str(w), 'mono'); }))
      : h('p', { class: 'empty', text: 'None.' }));

    const lim = rl.limited && typeof rl.limited === 'object' ? rl.limited : {};
    const now = serverNow();
    const limKeys = Object.keys(lim).filter(function (k) { return !isNum(lim[k]) || lim[k] > now; }).sort();
    parts.push(h('h3', { class: 'sub-h', text: 'Limited now' }));
    parts.push(limKeys.length ? h('ul', { class: 'limited' }, limKeys.map(function (k) {
      return h('li', null, badge('limited', 'warn'), h('span', { class: 'mono', text: k }),
        h('span', { class: 'muted' }, 'until ', isNum(lim[k]) ? fmtClock(lim[k]) : '?', ' (', relTime(lim[k]), ')'));
    })) : h('p', { class: 'empty', text: 'Nobody is rate limited.' }));
    ui.rlBody.replaceChildren.apply(ui.rlBody, parts);
  }

  // Task detail --------------------------------------------------------------------------

  let detailReq = 0;
  let detailRefreshTimer = null;
  let detailReturnFocus = null;

  function openTask(id) {
    if (!id) return;
    if (model.detail.id !== id) model.detail = { id: id, task: null, loading: true, error: null };
    else model.detail.loading = true;
    if (ui.taskDetail.hidden) detailReturnFocus = document.activeElement;
    ui.taskDetail.dataset.taskId = id;
    ui.taskDetail.hidden = false;
    ui.drawerBackdrop.hidden = false;
    document.body.classList.add('drawer-open');
    mark('detail');
    flush();
    ui.taskDetailClose.focus();
    refreshDetail();
  }

  function closeDetail() {
    model.detail = { id: null, task: null, loading: false, error: null };
    clearTimeout(detailRefreshTimer);
    ui.taskDetail.hidden = true;
    ui.drawerBackdrop.hidden = true;
    delete ui.taskDetail.dataset.taskId;
    document.body.classList.remove('drawer-open');
    if (detailReturnFocus && typeof detailReturnFocus.focus === 'function' && document.contains(detailReturnFocus)) {
      detailReturnFocus.focus();
    }
    detailReturnFocus = null;
  }

  async function refreshDetail() {
    const id = model.detail.id;
    if (!id) return;
    const req = ++detailReq;
    const r = await api('GET', '/api/tasks/' + encodeURIComponent(id));
    if (req !== detailReq || model.detail.id !== id) return;
    model.detail.loading = false;
    if (r.ok) {
      model.detail.task = r.data;
      model.detail.error = null;
      // The table row may be stale: sync it from the full record.
      const row = model.tasks.byId.get(id);
      if (row && r.data && r.data.status) {
        const fresh = taskRowFrom(r.data);
        const seqKnown = model.taskStatus.get(id);
        if (!seqKnown || seqKnown === fresh.status) {
          Object.assign(row, fresh);
          mark('tasks');
        }
      }
    } else {
      model.detail.error = r.status === 404 ? 'Task not found.' : 'Could not load the task: ' + errorText(r);
      if (r.status === 401) sessionLost();
    }
    mark('detail');
  }

  function refreshDetailSoon() {
    clearTimeout(detailRefreshTimer);
    detailRefreshTimer = setTimeout(refreshDetail, 300);
  }

  function renderDetail() {
    const d = model.detail;
    if (!d.id) return;
    const t = d.task;
    ui.detailTitle.textContent = d.id;
    ui.detailTitle.title = d.id;
    const status = t ? str(t.status) : str(model.taskStatus.get(d.id) || '');
    ui.detailStatus.textContent = status || (d.loading ? 'loading…' : '');
    ui.detailStatus.className = 'badge badge-st-' + status;
    ui.taskDetail.dataset.status = status;

    // Actions.
    const actions = [];
    if (t) {
      if (!TERMINAL.has(status)) {
        const pending = model.pending.has('cancel:' + d.id);
        actions.push(h('button', {
          type: 'button', class: 'btn btn-danger', testid: 'detail-cancel-btn',
          data: { action: 'cancel', target: d.id, needs: 'steer' }, disabled: pending, text: pending ? 'Cancelling…' : 'Cancel task',
        }));
      }
      if (status === 'dead_letter' || status === 'blocked') {
        const pending = model.pending.has('retry:' + d.id);
        actions.push(h('button', {
          type: 'button', class: 'btn btn-primary', testid: 'detail-retry-btn',
          data: { action: 'retry', target: d.id, needs: 'steer' }, disabled: pending, text: pending ? 'Retrying…' : 'Retry',
        }));
      }
    }
    ui.detailActions.replaceChildren.apply(ui.detailActions, actions);
    ui.detailActions.hidden = actions.length === 0;

    const body = [];
    if (d.error) body.push(h('p', { class: 'result-line', data: { kind: 'bad' }, text: d.error }));
    if (!t) {
      if (d.loading) body.push(h('p', { class: 'empty', text: 'Loading…' }));
      ui.detailBody.replaceChildren.apply(ui.detailBody, body);
      return;
    }

    body.push(h('h3', { class: 'sub-h', text: 'Description' }));
    body.push(h('p', { class: 'detail-desc', text: str(t.description) || '(none)' }));

    const kv = [];
    const add = function (label, value) { kv.push(h('dt', { text: label }), h('dd', null, value)); };
    const timeVal = function (ts) {
      return isNum(ts) ? [h('span', { text: fmtClock(ts) + ' · ' }), relTime(ts)] : h('span', { class: 'muted', text: '—' });
    };
    add('priority', priorityName(t.priority) || '—');
    add('assigned to', h('span', { class: 'mono', text: str(t.assigned_to) || '—' }));
    const dash = function (x) { return x === undefined || x === null || x === '' ? '—' : String(x); };
    add('attempt', dash(t.attempt));
    add('generation', dash(t.generation));
    add('retries', dash(t.retry_count) + ' / ' + dash(t.max_retries));
    add('reclaims', dash(t.reclaim_count) + (t.max_reclaims !== undefined && t.max_reclaims !== null ? ' / ' + dash(t.max_reclaims) : ''));
    add('created', timeVal(t.created_at));
    add('updated', timeVal(t.updated_at));
    add('assigned', timeVal(t.assigned_at));
    add('accepted', timeVal(t.accepted_at));
    add('completed', timeVal(t.completed_at));
    if (t.complete_by !== undefined && t.complete_by !== null) add('complete by', timeVal(t.complete_by));
    if (t.lease_ms !== undefined && t.lease_ms !== null) add('lease', fmtDuration(t.lease_ms));
    if (progressText(t.progress)) add('progress', h('span', { testid: 'detail-progress', text: progressText(t.progress) }));
    if (isNum(t.run_after)) add('run after', timeVal(t.run_after));
    if (isNum(t.stall_ms)) add('stalled after', fmtDuration(t.stall_ms));
    if (isNum(t.max_runtime_ms)) add('max runtime', fmtDuration(t.max_runtime_ms));
    add('tokens used', isNum(t.tokens_used) ? fmtInt(t.tokens_used) : '—');
    add('submitted by', h('span', { class: 'mono', text: str(t.submitted_by) || '—' }));
    const caps = Array.isArray(t.needed_capabilities) ? t.needed_capabilities : [];
    add('capabilities', caps.length ? h('span', { class: 'chips' }, caps.map(function (c) { return chip(str(c)); })) : '—');
    if (t.repo) {
      const globs = function (list) { return Array.isArray(list) ? list.map(function (g) { return chip(str(g)); }) : []; };
      add('write scope', h('span', { class: 'chips', testid: 'detail-scope' },
        [h('span', { class: 'mono', text: str(t.repo) + ':' })].concat(globs(t.write_paths))));
      if (Array.isArray(t.read_paths) && t.read_paths.length) {
        add('reads', h('span', { class: 'chips', testid: 'detail-read-scope' }, globs(t.read_paths)));
      }
    }
    if (t.approval) {
      add('approval', h('span', { testid: 'detail-approval', text: str(t.approval).replace('_', ' ') + (t.merge_on_approval ? ', then merge' : '') }));
    }
    const spentT = t.spent || {};
    if (isNum(t.budget_tokens) || isNum(t.budget_usd) || isNum(spentT.tokens) && spentT.tokens > 0 || isNum(spentT.cost_usd) && spentT.cost_usd > 0) {
      let text = fmtInt(spentT.tokens || 0) + ' tokens · ' + fmtUsd(spentT.cost_usd);
      const lim = [];
      if (isNum(t.budget_tokens)) lim.push(fmtInt(t.budget_tokens) + ' tokens');
      if (isNum(t.budget_usd)) lim.push(fmtUsd(t.budget_usd));
      if (lim.length) text += ' of ' + lim.join(', ');
      add('spent', h('span', { testid: 'detail-spent', text: text }));
    }
    if (t.merge && typeof t.merge === 'object') {
      add('merge', h('span', { testid: 'detail-merge', text: t.merge.merged ? 'merged (' + str(t.merge.method) + ')' : 'failed: ' + str(t.merge.error).slice(0, 300) }));
    }
    if (Array.isArray(t.depends_on) && t.depends_on.length) {
      add('depends on', h('span', { class: 'chips', testid: 'detail-depends-on' }, t.depends_on.slice(0, 50).map(function (d) {
        return taskLink(str(d));
      }).concat(t.depends_on.length > 50 ? [chip('+' + (t.depends_on.length - 50) + ' more')] : [])));
    }
    if (t.archived) {
      add('archived', h('span', { class: 'mono', testid: 'detail-archived', text: 'in ' + str(t.archive_file) }));
    }
    if (t.depends_on_correlation) {
      add('fan-in', h('span', { class: 'mono', testid: 'detail-fan-in', text: 'every task of ' + str(t.depends_on_correlation) }));
    }
    if (Array.isArray(t.inputs_from) && t.inputs_from.length) {
      add('inputs from', h('span', { class: 'chips', testid: 'detail-inputs-from' }, t.inputs_from.map(function (d) { return taskLink(str(d)); })));
    }
    if (t.notify) add('notify', h('span', { testid: 'detail-notify', text: t.notify === 'event' ? 'task.finished event' : 'message to ' + str(t.submitted_by) }));
    if (t.correlation_id) add('correlation', h('span', { class: 'mono', testid: 'detail-correlation', text: str(t.correlation_id) }));
    if (t.blocked_policy) {
      add('when blocked', h('span', { testid: 'detail-blocked-policy', text: str(t.blocked_policy) +
        (isNum(t.blocked_requeue_ms) ? ' (requeue after ' + fmtDuration(t.blocked_requeue_ms) + ')' : '') }));
    }
    if (t.dedupe_key) add('dedupe key', h('span', { class: 'mono', testid: 'detail-dedupe-key', text: str(t.dedupe_key) }));
    if (Array.isArray(t.context_keys) && t.context_keys.length) {
      add('context keys', h('span', { class: 'chips', testid: 'detail-context-keys' }, t.context_keys.map(function (k) { return chip(str(k)); })));
    }
    if (t.concurrency_key) {
      add('concurrency key', h('span', { class: 'mono', testid: 'detail-concurrency-key', text: str(t.concurrency_key) }));
    }
    if (t.waiting_on_scope && typeof t.waiting_on_scope === 'object') {
      const w = t.waiting_on_scope;
      add('waiting for', h('span', {
        class: 'mono text-warn', testid: 'detail-waiting-scope',
        data: { holder: str(w.task_id || w.reservation_id) },
        text: w.reservation_id
          ? 'reservation ' + str(w.reservation_id) + ' of ' + str(w.agent_id) + ' (overlapping paths)'
          : str(w.task_id) + ' on ' + str(w.agent_id) + ' (overlapping write scope)',
      }));
    }
    if (t.result && typeof t.result === 'object' && safeHttpUrl(t.result.pr_url)) {
      const u = safeHttpUrl(t.result.pr_url);
      add('pull request', h('a', { href: u, target: '_blank', rel: 'noopener noreferrer', class: 'pr-link wrap', text: u }));
    }
    body.push(h('dl', { class: 'kv' }, kv));

    if (t.last_error) {
      body.push(h('h3', { class: 'sub-h', text: 'Last error' }));
      body.push(h('pre', { class: 'pre text-bad', text: str(t.last_error) }));
    }
    if (t.result !== undefined && t.result !== null) {
      body.push(h('h3', { class: 'sub-h', text: 'Result' }));
      body.push(h('pre', { class: 'pre', text: JSON.stringify(t.result, null, 2) }));
    }
    if (t.metadata && typeof t.metadata === 'object' && Object.keys(t.metadata).length) {
      body.push(h('h3', { class: 'sub-h', text: 'Metadata' }));
      body.push(h('pre', { class: 'pre', text: JSON.stringify(t.metadata, null, 2) }));
    }

    const hist = Array.isArray(t.history) ? t.history : [];
    body.push(h('h3', { class: 'sub-h', text: 'History (' + hist.length + ')' }));
    body.push(h('ol', { class: 'history' }, hist.map(function (e) {
      const details = e.details === undefined || e.details === null ||
        (typeof e.details === 'object' && !Array.isArray(e.details) && !Object.keys(e.details).length)
        ? '' : fmtValue(e.details);
      return h('li', { class: 'history-entry', testid: 'task-history-entry', data: { event: str(e.event) } },
        h('span', { class: 'history-time mono', title: fmtAbs(e.ts), text: fmtClock(e.ts) }),
        h('span', { class: 'history-event', text: str(e.event) }),
        details ? h('span', { class: 'history-details', text: details }) : null);
    })));
    ui.detailBody.replaceChildren.apply(ui.detailBody, body);
  }

  // ------------------------------------------------------------- WebSocket

  let ws = null;
  let reconnectTimer = null;
  let lastFrameAt = 0;
  let probeSentAt = 0;
  let freshConnection = false;

  function wsUrl() {
    return (location.protocol === 'https:' ? 'wss:' : 'ws:') + '//' + location.host + '/ws/dashboard';
  }

  function setConn(state) {
    model.conn.state = state;
    mark('conn');
    flush();
  }

  function connect() {
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    if (!model.loggedIn) return;
    dropSocket();
    model.conn.nextRetryAt = 0;
    model.conn.checking = false;
    setConn('connecting');
    let sock;
    try {
      sock = new WebSocket(wsUrl());
    } catch (e) {
      onSocketGone();
      return;
    }
    ws = sock;
    sock.onopen = function () {
      if (ws !== sock) return;
      lastFrameAt = Date.now();
      probeSentAt = 0;
      freshConnection = true;
      model.conn.everLive = true;
      setConn('live');
    };
    sock.onmessage = function (ev) {
      if (ws !== sock) return;
      onFrame(ev.data);
    };
    sock.onerror = function () { /* followed by close */ };
    sock.onclose = function () {
      if (ws !== sock) return;
      ws = null;
      onSocketGone();
    };
  }

  function dropSocket() {
    const s = ws;
    ws = null;
    if (!s) return;
    s.onopen = s.onmessage = s.onerror = s.onclose = null;
    try { s.close(1000, 'bye'); } catch (e) { /* already closed */ }
  }

  async function onSocketGone() {
    if (!model.loggedIn) return;
    if (model.pending.size) {
      // Results of in-flight actions will never arrive on this socket.
      model.pending.clear();
      mark('deadLetter', 'alerts', 'detail');
    }
    model.conn.checking = true;
    model.conn.nextRetryAt = 0;
    setConn('disconnected');
    // A failed upgrade looks like 1006 to us; the session endpoint tells us whether
    // the cookie is still good.
    const r = await api('GET', '/dashboard/session');
    if (!model.loggedIn || ws || reconnectTimer) return;
    model.conn.checking = false;
    if (r.ok && r.data && r.data.authenticated === false) {
      showLogin('Session expired — log in again.');
      return;
    }
    // Gone or a standby now: another hub of the same database may lead.
    if (!r.ok && await moveToActiveHub()) return;
    scheduleReconnect();
  }

  /** Asks every other hub of this database (`hub_urls`) for its role and
   *  opens the dashboard of the one that leads; false when none does yet. */
  async function moveToActiveHub() {
    const urls = model.hub && Array.isArray(model.hub.hub_urls) ? model.hub.hub_urls : [];
    for (const url of urls) {
      let origin;
      try { origin = new URL(url).origin; } catch (e) { continue; }
      if (origin === location.origin) continue;
      const abort = new AbortController();
      const timer = setTimeout(function () { abort.abort(); }, 2000);
      let health = null;
      try {
        const res = await fetch(origin + '/health', { cache: 'no-store', signal: abort.signal });
        health = await res.json();
      } catch (e) {
        health = null;
      } finally {
        clearTimeout(timer);
      }
      if (!model.loggedIn || ws) return false;
      if (health && (health.role === 'leader' || health.role === 'single')) {
        model.conn.movingTo = origin;
        mark('conn');
        flush();
        location.assign(origin + location.pathname + location.search + location.hash);
        return true;
      }
    }
    return false;
  }

  function scheduleReconnect() {
    clearTimeout(reconnectTimer);
    const c = model.conn;
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * Math.pow(2, c.attempt));
    const delay = Math.max(150, Math.round(Math.random() * ceiling)); // full jitter
    c.attempt = Math.min(c.attempt + 1, 30);
    c.nextRetryAt = Date.now() + delay;
    setConn('disconnected');
    reconnectTimer = setTimeout(connect, delay);
  }

  function reconnectNow() {
    if (!model.loggedIn || ws) return;
    model.conn.attempt = 0;
    connect();
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  let snapTimer = null;
  let lastSnapRequest = 0;

  /** Ask for a fresh snapshot soon: trailing, at most once every 2 s. */
  function requestSnapshotSoon() {
    if (snapTimer) return;
    const wait = Math.max(SNAPSHOT_DEBOUNCE_MS, lastSnapRequest + SNAPSHOT_MIN_INTERVAL_MS - Date.now());
    snapTimer = setTimeout(function () {
      snapTimer = null;
      lastSnapRequest = Date.now();
      send({ type: 'request_snapshot' });
    }, wait);
  }

  function watchdog() {
    if (!ws || model.conn.state !== 'live') return;
    const now = Date.now();
    if (probeSentAt) {
      if (now - probeSentAt > PROBE_TIMEOUT_MS) {
        // Half-open connection: drop it and go through the normal reconnect path.
        const s = ws;
        dropSocket();
        probeSentAt = 0;
        if (s) onSocketGone();
      }
    } else if (now - lastFrameAt > IDLE_PROBE_MS) {
      probeSentAt = now;
      lastSnapRequest = now;
      send({ type: 'request_snapshot' });
    }
  }

  // ------------------------------------------------------------ frames in

  function onFrame(raw) {
    lastFrameAt = Date.now();
    probeSentAt = 0;
    let msg;
    try { msg = JSON.parse(raw); } catch (e) { return; }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.type) {
      case 'snapshot':
        applySnapshot(msg.data || {}, msg.alerts);
        loadQuestions();
        loadSpend();
        loadRules();
        loadTopics();
        loadContext();
        break;
      case 'events':
        if (Array.isArray(msg.data)) {
          for (const ev of msg.data) {
            try { applyEvent(ev); } catch (e) { console.error('event failed', ev, e); }
          }
        }
        break;
      case 'retry_result': onRetryResult(msg); break;
      case 'cancel_result': onCancelResult(msg); break;
      case 'alert_ack_result': onAckResult(msg); break;
      case 'error':
        actionResult('error: ' + str(msg.error), 'bad', str(msg.detail));
        toast('Hub refused a request: ' + str(msg.error) + (msg.detail ? ' — ' + str(msg.detail) : ''), 'bad');
        break;
      default:
        break;
    }
  }

  function applySnapshot(d, alerts) {
    const localNow = Date.now();
    if (isNum(d.timestamp)) model.clockOffset = d.timestamp - localNow;
    model.uptimeMs = isNum(d.uptime_ms) ? d.uptime_ms : null;
    model.uptimeAt = localNow;
    model.health = d.health && typeof d.health === 'object' ? d.health : { status: 'ok', conditions: [] };
    model.hub = d.hub && typeof d.hub === 'object' ? d.hub : null;
    model.agents = new Map((Array.isArray(d.agents) ? d.agents : []).filter(function (a) { return a && a.agent_id; })
      .map(function (a) { return [a.agent_id, a]; }));
    const q = d.queue || {};
    model.queue = {
      by_status: q.by_status || {}, by_priority: q.by_priority || {}, dead_letter: q.dead_letter,
      oldest_queued_age_ms: ageOf(q.oldest_queued_since), oldest_blocked_age_ms: ageOf(q.oldest_blocked_since),
    };
    model.reservations = claimRows(d.reservations);
    model.concurrency = keyRows(d.concurrency);
    model.usage = (Array.isArray(d.usage) ? d.usage : []).filter(function (p) { return p && p.credential_group; });
    model.deadLetter = (Array.isArray(d.dead_letter_tasks) ? d.dead_letter_tasks : [])
      .filter(function (t) { return t && t.id; }).slice(0, LIST_CAP);
    model.completions = (Array.isArray(d.recent_completions) ? d.recent_completions : [])
      .filter(function (c) { return c && c.task_id; }).slice(0, LIST_CAP);
    const tp = d.throughput || {};
    model.throughput = {
      completed_last_hour: tp.completed_last_hour,
      avg_completion_ms: tp.avg_completion_ms,
      total_tokens_hour: tp.total_tokens_hour,
    };
    model.storage = d.storage && typeof d.storage === 'object' ? d.storage : null;
    model.alerts = new Map((Array.isArray(d.active_alerts) ? d.active_alerts : []).filter(function (a) { return a && a.rule_id; })
      .map(function (a) { return [a.rule_id, a]; }));
    if (Array.isArray(alerts)) {
      model.alertLog = alerts.slice().sort(function (a, b) {
        return (isNum(b.seq) ? b.seq : b.at || 0) - (isNum(a.seq) ? a.seq : a.at || 0);
      }).slice(0, 200);
    }
    model.rateLimits = d.rate_limits && typeof d.rate_limits === 'object' ? d.rate_limits : null;
    const ch = d.charts || {};
    model.charts = {
      interval_ms: ch.interval_ms,
      points: (Array.isArray(ch.points) ? ch.points : []).filter(function (p) { return p && isNum(p.t); }),
    };
    trimChart();
    model.haveSnapshot = true;
    model.conn.attempt = 0; // a full snapshot means the connection really works

    // Tasks the snapshot shows in dead letter: remember, so a late fetch cannot resurrect others.
    for (const t of model.deadLetter) {
      if (!model.taskStatus.has(t.id)) model.taskStatus.set(t.id, 'dead_letter');
    }

    if (freshConnection) {
      // Events may have been missed while disconnected: reload what is not in snapshots.
      freshConnection = false;
      if (model.tasks.loadedAt) loadTasks(false);
      if (model.detail.id) refreshDetail();
    }
    markAll();
  }

  function trimChart() {
    const pts = model.charts.points;
    if (!pts.length) return;
    pts.sort(function (a, b) { return a.t - b.t; });
    const newest = pts[pts.length - 1].t;
    const cut = newest - HOUR_MS;
    let i = 0;
    while (i < pts.length && pts[i].t < cut) i++;
    if (i) pts.splice(0, i);
  }

  function applyEvent(ev) {
    if (!ev || typeof ev !== 'object') return;
    switch (ev.type) {
      case 'task_event': onTaskEvent(ev); break;
      case 'agent_joined':
      case 'status_changed':
        if (ev.agent && ev.agent.agent_id) {
          model.agents.set(ev.agent.agent_id, ev.agent);
          mark('agents');
        }
        break;
      case 'agent_left': {
        const a = model.agents.get(ev.agent_id);
        if (a) {
          model.agents.set(ev.agent_id, Object.assign({}, a, {
            online: false, fsm_state: 'offline', current_task_id: null,
            last_state_change: isNum(ev.timestamp) ? ev.timestamp : serverNow(),
          }));
          mark('agents');
        }
        break;
      }
      case 'metrics_snapshot': onMetrics(ev.data || {}); break;
      case 'reservations':
        model.reservations = claimRows(ev.reservations);
        mark('reservations');
        break;
      case 'topic_event':
        // Coalesced: one reload for a burst of events.
        if (!topicsTimer) topicsTimer = setTimeout(function () { topicsTimer = null; loadTopics(); }, 300);
        break;
      case 'concurrency':
        model.concurrency = keyRows(ev.keys);
        mark('queue');
        break;
      case 'usage':
        model.usage = (Array.isArray(ev.pauses) ? ev.pauses : []).filter(function (p) { return p && p.credential_group; });
        mark('usage');
        break;
      case 'alert_fired':
      case 'alert_updated':
        if (ev.data && ev.data.rule_id) {
          const prev = model.alerts.get(ev.data.rule_id);
          model.alerts.set(ev.data.rule_id, ev.data);
          const a = ev.data;
          let kind = ev.type === 'alert_fired' ? 'fired' : 'updated';
          if (ev.type === 'alert_updated' && prev) {
            if (a.acknowledged && !prev.acknowledged) kind = 'acknowledged';
            else if (a.severity !== prev.severity) kind = 'escalated';
            else kind = 'repeated';
          }
          logAlert(kind, a.rule_id, a.severity, a.message);
          if (ev.type === 'alert_fired') toast('Alert ' + str(a.severity) + ': ' + str(a.message), a.severity === 'critical' ? 'bad' : 'warn');
          mark('alerts');
          requestSnapshotSoon(); // health banner
        }
        break;
      case 'alert_cleared':
        if (ev.rule_id) {
          const prev = model.alerts.get(ev.rule_id);
          model.alerts.delete(ev.rule_id);
          logAlert('cleared', ev.rule_id, prev ? prev.severity : null, prev ? prev.message : '');
          mark('alerts');
          requestSnapshotSoon();
        }
        break;
      default:
        if (STORAGE_EVENTS[ev.type]) {
          const info = STORAGE_EVENTS[ev.type];
          const d = ev.data || {};
          const what = d.path || d.file || d.error || d.detail || d.message || '';
          toast(info[0] + (what ? ': ' + fmtValue(what) : ''), info[1]);
          requestSnapshotSoon();
        }
        // Unknown event types are ignored.
        break;
    }
  }

  function logAlert(kind, ruleId, severity, message) {
    model.alertLog.unshift({ seq: null, kind: kind, rule_id: ruleId, severity: severity || null, message: str(message), at: serverNow() });
    if (model.alertLog.length > 200) model.alertLog.length = 200;
  }

  function onMetrics(d) {
    const qd = d.queue_depth || {};
    const lat = (d.task_latency && d.task_latency.assign_to_complete_ms) || {};
    const util = d.agent_utilization || {};
    if (isNum(d.timestamp)) {
      model.charts.points.push({
        t: d.timestamp,
        queue_depth: isNum(qd.now) ? qd.now : null,
        p50: isNum(lat.p50) ? lat.p50 : null,
        p90: isNum(lat.p90) ? lat.p90 : null,
        p99: isNum(lat.p99) ? lat.p99 : null,
        utilization: isNum(util.ratio) ? util.ratio : null,
      });
      trimChart();
      mark('charts');
    }
    if (qd.by_status && typeof qd.by_status === 'object') model.queue.by_status = qd.by_status;
    if (qd.by_priority && typeof qd.by_priority === 'object') model.queue.by_priority = qd.by_priority;
    if (isNum(qd.dead_letter)) model.queue.dead_letter = qd.dead_letter;
    model.queue.oldest_queued_age_ms = qd.oldest_queued_age_ms;
    model.queue.oldest_blocked_age_ms = qd.oldest_blocked_age_ms;
    mark('queue');
    if (d.spend && typeof d.spend === 'object') { model.spend = d.spend; mark('spend'); }
  }

  function onTaskEvent(ev) {
    const id = str(ev.task_id);
    if (!id) return;
    if (isNum(ev.seq)) {
      const last = model.taskSeq.get(id);
      if (isNum(last) && last >= ev.seq) return; // stale or duplicate
      model.taskSeq.set(id, ev.seq);
      if (model.taskSeq.size > 20000) {
        // Forget the oldest half (Map keeps insertion order).
        let n = 10000;
        for (const k of model.taskSeq.keys()) { if (n-- <= 0) break; model.taskSeq.delete(k); model.taskStatus.delete(k); }
      }
    }
    const status = str(ev.status);
    if (status) model.taskStatus.set(id, status);
    // A question asked or answered (or its task moved on): fetch the list again.
    // Spend moved at a budget pause and at a completion (else each metrics
    // snapshot brings it).
    if (ev.event === 'budget_exceeded' || ev.event === 'completed') loadSpend();
    if (ev.event === 'input_required' || ev.event === 'answered' || ev.event === 'approval_required' ||
        ev.event === 'approved' || ev.event === 'rejected' || ev.event === 'budget_exceeded' ||
        ev.event === 'resumed' ||
        model.questions.some(function (q) { return q.task_id === id; })) loadQuestions();
    if (ev.event === 'progress' && ev.progress && typeof ev.progress === 'object') {
      model.taskProgress.set(id, ev.progress);
      if (model.taskProgress.size > 5000) model.taskProgress.delete(model.taskProgress.keys().next().value);
      const row0 = model.tasks.byId.get(id);
      if (row0) row0.progress = ev.progress;
      mark('agents', 'tasks');
    } else if (ev.event === 'assigned') {
      model.taskProgress.delete(id);
      const row0 = model.tasks.byId.get(id);
      if (row0) row0.progress = null;
    }

    // Tasks table.
    const t = model.tasks;
    const row = t.byId.get(id);
    if (row) {
      if (status) row.status = status;
      if (status === 'queued') row.assigned_to = null;
      else if (ev.agent_id) row.assigned_to = ev.agent_id;
      if (isNum(ev.priority)) row.priority = ev.priority;
      if (isNum(ev.timestamp)) row.updated_at = ev.timestamp;
      if (typeof ev.description === 'string' && ev.description) row.description = ev.description;
      mark('tasks');
    } else if (ev.event === 'queued' && typeof ev.description === 'string' && t.loadedAt && filterMatchesNew(status || 'queued')) {
      const fresh = {
        id: id, status: status || 'queued', priority: ev.priority, assigned_to: null,
        description: ev.description, created_at: ev.timestamp, updated_at: ev.timestamp,
      };
      t.rows.unshift(fresh);
      t.byId.set(id, fresh);
      if (t.rows.length > TABLE_CAP) {
        for (const gone of t.rows.splice(TABLE_CAP)) t.byId.delete(gone.id);
      }
      mark('tasks');
    }

    // Agent cards: keep current task ids plausible until the next status_changed.
    if (ev.agent_id && model.agents.has(ev.agent_id) && (status === 'completed' || status === 'cancelled' ||
        status === 'dead_letter' || status === 'queued')) {
      const a = model.agents.get(ev.agent_id);
      const running = Array.isArray(a.running) ? a.running : [];
      if (a.current_task_id === id || running.some(function (t) { return t.task_id === id; })) {
        model.agents.set(ev.agent_id, Object.assign({}, a, {
          current_task_id: a.current_task_id === id ? null : a.current_task_id,
          running: running.filter(function (t) { return t.task_id !== id; }),
        }));
        mark('agents');
      }
    }

    // Completions and throughput.
    if (ev.event === 'completed' && ev.completion && typeof ev.completion === 'object') {
      const c = Object.assign({ task_id: id }, ev.completion);
      model.completions = [c].concat(model.completions.filter(function (x) { return x.task_id !== c.task_id; })).slice(0, LIST_CAP);
      const tp = model.throughput;
      const n = isNum(tp.completed_last_hour) ? tp.completed_last_hour : 0;
      if (isNum(c.duration_ms)) {
        tp.avg_completion_ms = isNum(tp.avg_completion_ms) && n > 0
          ? (tp.avg_completion_ms * n + c.duration_ms) / (n + 1)
          : c.duration_ms;
      }
      tp.completed_last_hour = n + 1;
      tp.total_tokens_hour = (isNum(tp.total_tokens_hour) ? tp.total_tokens_hour : 0) + (isNum(c.tokens_used) ? c.tokens_used : 0);
      mark('completions', 'throughput');
    }

    // Dead letter list.
    const idx = model.deadLetter.findIndex(function (x) { return x.id === id; });
    if (status === 'dead_letter') {
      if (idx < 0) {
        const base = row || {};
        model.deadLetter.unshift({
          id: id, status: 'dead_letter', priority: isNum(ev.priority) ? ev.priority : base.priority,
          description: str(ev.description || base.description), assigned_to: ev.agent_id || base.assigned_to || null,
          updated_at: ev.timestamp, last_error: null,
        });
        if (model.deadLetter.length > LIST_CAP) model.deadLetter.length = LIST_CAP;
        mark('deadLetter');
      }
      fetchDeadLetter(id);
    } else if (status && idx >= 0) {
      model.deadLetter.splice(idx, 1);
      mark('deadLetter');
    }

    // Open detail.
    if (model.detail.id === id) {
      if (model.detail.task && status) model.detail.task.status = status;
      mark('detail');
      refreshDetailSoon();
    }

    requestSnapshotSoon();
  }

  async function fetchDeadLetter(id) {
    const r = await api('GET', '/api/tasks/' + encodeURIComponent(id));
    if (!r.ok || !r.data || r.data.id !== id) return;
    // Only if nothing moved it out of dead letter meanwhile.
    if (model.taskStatus.get(id) !== 'dead_letter' || r.data.status !== 'dead_letter') return;
    const idx = model.deadLetter.findIndex(function (x) { return x.id === id; });
    if (idx >= 0) model.deadLetter[idx] = r.data;
    else model.deadLetter.unshift(r.data);
    if (model.deadLetter.length > LIST_CAP) model.deadLetter.length = LIST_CAP;
    mark('deadLetter');
  }

  // ------------------------------------------------------------ actions out

  function notConnected(what) {
    actionResult(what + ': not connected', 'bad');
    toast('Not connected to the hub — ' + what + ' was not sent.', 'bad');
  }

  function doRetry(id) {
    if (!id || model.pending.has('retry:' + id)) return;
    if (!send({ type: 'retry_task', task_id: id })) { notConnected('retry ' + id); return; }
    model.pending.add('retry:' + id);
    actionResult('retry ' + id + ': sent', 'info');
    mark('deadLetter', 'detail');
  }

  function doCancel(id) {
    if (!id || model.pending.has('cancel:' + id)) return;
    if (!send({ type: 'cancel_task', task_id: id })) { notConnected('cancel ' + id); return; }
    model.pending.add('cancel:' + id);
    actionResult('cancel ' + id + ': sent', 'info');
    mark('deadLetter', 'detail');
  }

  function doAck(ruleId) {
    if (!ruleId || model.pending.has('ack:' + ruleId)) return;
    if (!send({ type: 'acknowledge_alert', rule_id: ruleId })) { notConnected('ack ' + ruleId); return; }
    model.pending.add('ack:' + ruleId);
    actionResult('ack ' + ruleId + ': sent', 'info');
    mark('alerts');
  }

  function onRetryResult(m) {
    const id = str(m.task_id);
    model.pending.delete('retry:' + id);
    const ok = m.status === 'requeued';
    actionResult('retry ' + id + ': ' + str(m.status), ok ? 'ok' : 'bad', str(m.detail));
    if (!ok && m.detail) toast('Retry ' + id + ' failed: ' + str(m.detail), 'bad');
    if (ok) {
      model.taskStatus.set(id, 'queued');
      model.deadLetter = model.deadLetter.filter(function (t) { return t.id !== id; });
      requestSnapshotSoon();
    }
    if (model.detail.id === id) refreshDetailSoon();
    mark('deadLetter', 'detail');
  }

  function onCancelResult(m) {
    const id = str(m.task_id);
    model.pending.delete('cancel:' + id);
    const ok = m.status === 'cancelled';
    actionResult('cancel ' + id + ': ' + str(m.status), ok ? 'ok' : 'bad',
      [m.previous_status ? 'was ' + m.previous_status : '', str(m.detail)].filter(Boolean).join(' — '));
    if (!ok && m.detail) toast('Cancel ' + id + ' failed: ' + str(m.detail), 'bad');
    if (ok) {
      model.taskStatus.set(id, 'cancelled');
      model.deadLetter = model.deadLetter.filter(function (t) { return t.id !== id; });
      requestSnapshotSoon();
    }
    if (model.detail.id === id) refreshDetailSoon();
    mark('deadLetter', 'detail');
  }

  function onAckResult(m) {
    const rule = str(m.rule_id);
    model.pending.delete('ack:' + rule);
    const ok = m.status === 'acknowledged';
    actionResult('ack ' + rule + ': ' + str(m.status), ok ? 'ok' : 'bad', str(m.detail));
    const a = model.alerts.get(rule);
    if (ok && a && !a.acknowledged) {
      model.alerts.set(rule, Object.assign({}, a, { acknowledged: true, acknowledged_at: serverNow() }));
    }
    mark('alerts');
  }

  // ------------------------------------------------------------- submit form

  function clearFieldErrors() {
    for (const el of ui.submitForm.querySelectorAll('[data-field-error]')) el.textContent = '';
    for (const el of ui.submitForm.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  }

  const FIELD_INPUT = {
    description: 'submitDescription',
    priority: 'submitPriority',
    max_retries: 'submitMaxRetries',
    needed_capabilities: 'submitCapabilities',
    repo: 'submitRepo',
    concurrency_key: 'submitConcurrencyKey',
    write_paths: 'submitWritePaths',
    approval: 'submitApproval',
    merge_on_approval: 'submitMerge',
    budget_tokens: 'submitBudgetTokens',
    budget_usd: 'submitBudgetUsd',
    depends_on: 'submitDependsOn',
    inputs_from: 'submitDependsOn',
    depends_on_correlation: 'submitFanIn',
    notify: 'submitNotify',
    correlation_id: 'submitCorrelation',
    dedupe_key: 'submitDedupeKey',
    run_after: 'submitRunAfter',
    stall_ms: 'submitStall',
    max_runtime_ms: 'submitMaxRuntime',
    read_paths: 'submitReadPaths',
    context_keys: 'submitContextKeys',
    metadata: 'submitMetadata',
    complete_by: 'submitCompleteBy',
    lease_ms: 'submitLease',
    max_reclaims: 'submitMaxReclaims',
    blocked_policy: 'submitBlockedPolicy',
    blocked_requeue_ms: 'submitBlockedRequeue',
  };

  function commaList(input) {
    return input.value.split(',').map(function (s) { return s.trim(); }).filter(Boolean);
  }

  // The "More options" fields, checked here where the hub cannot tell what
  // was typed (seconds, a local time, JSON): null and a field error when one
  // is wrong.
  function moreOptions(body) {
    let ok = true;
    const bad = function (field, text) { showFieldError(field, text); ok = false; };
    const corr = ui.submitCorrelation.value.trim();
    if (corr) body.correlation_id = corr;
    const dedupe = ui.submitDedupeKey.value.trim();
    if (dedupe) body.dedupe_key = dedupe;
    [['run_after', ui.submitRunAfter], ['complete_by', ui.submitCompleteBy]].forEach(function (f) {
      if (!f[1].value) return;
      const ms = new Date(f[1].value).getTime();
      if (isFinite(ms)) body[f[0]] = ms; else bad(f[0], 'not a date and time');
    });
    [['stall_ms', ui.submitStall, 1000], ['max_runtime_ms', ui.submitMaxRuntime, 1000], ['lease_ms', ui.submitLease, 1000],
      ['blocked_requeue_ms', ui.submitBlockedRequeue, 1000], ['max_reclaims', ui.submitMaxReclaims, 1]].forEach(function (f) {
      const v = f[1].value.trim();
      if (v === '') return;
      if (/^\d+$/.test(v)) body[f[0]] = Number(v) * f[2];
      else bad(f[0], f[2] === 1 ? 'must be a whole number' : 'must be a whole number of seconds');
    });
    if (ui.submitBlockedPolicy.value) body.blocked_policy = ui.submitBlockedPolicy.value;
    const reads = commaList(ui.submitReadPaths);
    if (reads.length) body.read_paths = reads;
    const keys = commaList(ui.submitContextKeys);
    if (keys.length) body.context_keys = keys;
    const meta = ui.submitMetadata.value.trim();
    if (meta) {
      let parsed = null;
      try { parsed = JSON.parse(meta); } catch (_) { parsed = null; }
      if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) body.metadata = parsed;
      else bad('metadata', 'must be a JSON object, like {"ticket": "OPS-12"}');
    }
    if (!ok) ui.submitMore.open = true;
    return ok;
  }

  function showFieldError(field, text) {
    const base = String(field || '').split(/[.[]/)[0];
    const slot = ui.submitForm.querySelector('[data-field-error="' + (FIELD_INPUT[base] ? base : '__none__') + '"]');
    if (!slot) return false;
    slot.textContent = slot.textContent ? slot.textContent + '; ' + text : text;
    ui[FIELD_INPUT[base]].setAttribute('aria-invalid', 'true');
    return true;
  }

  let submitting = false;

  async function onSubmitTask(ev) {
    ev.preventDefault();
    if (submitting) return;
    clearFieldErrors();
    const result = ui.submitResult;
    const body = {
      description: ui.submitDescription.value,
      priority: ui.submitPriority.value || 'normal',
      needed_capabilities: commaList(ui.submitCapabilities),
    };
    const repo = ui.submitRepo.value.trim();
    if (repo) body.repo = repo;
    const key = ui.submitConcurrencyKey.value.trim();
    if (key) body.concurrency_key = key;
    const writes = commaList(ui.submitWritePaths);
    if (writes.length) body.write_paths = writes;
    if (ui.submitApproval.value) body.approval = ui.submitApproval.value;
    if (ui.submitMerge.checked) body.merge_on_approval = true;
    // Sent as typed numbers; the hub says what is wrong with them.
    const bt = ui.submitBudgetTokens.value.trim();
    if (bt !== '') body.budget_tokens = /^\d+$/.test(bt) ? Number(bt) : bt;
    const bu = ui.submitBudgetUsd.value.trim();
    if (bu !== '') body.budget_usd = isFinite(Number(bu)) ? Number(bu) : bu;
    const deps = commaList(ui.submitDependsOn);
    if (deps.length) {
      body.depends_on = deps;
      if (ui.submitInputs.checked) body.inputs_from = deps;
    }
    const fanIn = ui.submitFanIn.value.trim();
    if (fanIn) body.depends_on_correlation = fanIn;
    if (ui.submitNotify.value) body.notify = ui.submitNotify.value;
    const mr = ui.submitMaxRetries.value.trim();
    if (mr !== '') {
      if (!/^\d+$/.test(mr)) {
        showFieldError('max_retries', 'must be a whole number');
        result.replaceChildren('Not submitted: max_retries must be a whole number');
        result.dataset.kind = 'bad';
        return;
      }
      body.max_retries = Number(mr);
    }
    if (!moreOptions(body)) {
      result.replaceChildren('Not submitted: see the marked fields under More options');
      result.dataset.kind = 'bad';
      return;
    }
    submitting = true;
    ui.submitButton.disabled = true;
    result.replaceChildren('Submitting…');
    result.dataset.kind = 'info';
    const r = await api('POST', '/api/tasks', body);
    submitting = false;
    ui.submitButton.disabled = false;
    if (r.ok) {
      const id = str(r.data.task_id);
      result.replaceChildren('Queued ', taskLink(id), ' (' + str(r.data.priority || body.priority) + ')');
      result.dataset.kind = 'ok';
      ui.submitDescription.value = '';
      ui.submitApproval.value = '';
      ui.submitMerge.checked = false;
      ui.submitBudgetTokens.value = '';
      ui.submitBudgetUsd.value = '';
      ui.submitDependsOn.value = '';
      ui.submitInputs.checked = false;
      ui.submitFanIn.value = '';
      ui.submitNotify.value = '';
      // A correlation often spans several submits: it stays; the rest goes.
      [ui.submitDedupeKey, ui.submitRunAfter, ui.submitStall, ui.submitMaxRuntime, ui.submitReadPaths,
        ui.submitContextKeys, ui.submitMetadata, ui.submitCompleteBy, ui.submitLease, ui.submitMaxReclaims,
        ui.submitBlockedPolicy, ui.submitBlockedRequeue].forEach(function (el) { el.value = ''; });
      actionResult('submit ' + id + ': ' + str(r.data.status || 'queued'), 'ok');
      addSubmittedRow(id, body, r.data);
      return;
    }
    result.dataset.kind = 'bad';
    const errs = Array.isArray(r.data.errors) ? r.data.errors : [];
    if (r.status === 422 && errs.length) {
      const lines = errs.map(function (e) {
        const text = str(e.detail) || str(e.error) || 'invalid';
        showFieldError(e.field, text);
        return str(e.field) + ': ' + text;
      });
      result.replaceChildren('Rejected — ' + lines.join('; '));
    } else {
      result.replaceChildren('Failed — ' + errorText(r));
      if (r.status === 401) sessionLost();
    }
  }

  // ----------------------------------------------------------- login/logout

  function setLoginError(text) {
    ui.loginError.textContent = text || '';
  }

  function loginErrorText(r) {
    const d = r.data || {};
    if (r.status === 0) return 'Cannot reach the hub. Check the address and try again.';
    if (r.status === 401) return 'Wrong token: the hub did not accept it.';
    if (r.status === 403 && d.error === 'admin_only') return 'That is an agent token; the dashboard needs the admin token, or a coordinator\'s or observer\'s';
    if (r.status === 403) return 'Refused: ' + str(d.error || 'forbidden');
    if (r.status === 422) {
      const errs = Array.isArray(d.errors) ? d.errors : [];
      return 'Invalid: ' + (errs.length ? errs.map(function (e) { return str(e.field) + ' ' + str(e.detail || e.error); }).join('; ') : str(d.error));
    }
    if (r.status === 429) {
      const s = isNum(d.retry_after_ms) ? Math.max(1, Math.ceil(d.retry_after_ms / 1000)) : null;
      return 'Too many attempts' + (s ? ' — try again in ' + s + 's' : ' — try again later');
    }
    return 'Login failed: ' + errorText(r);
  }

  async function onLogin(ev) {
    ev.preventDefault();
    const token = ui.loginToken.value;
    if (!token.trim()) {
      setLoginError('Enter a token.');
      ui.loginToken.focus();
      return;
    }
    setLoginError('');
    ui.loginSubmit.disabled = true;
    ui.loginSubmit.textContent = 'Logging in…';
    const r = await api('POST', '/dashboard/login', { token: token });
    ui.loginSubmit.disabled = false;
    ui.loginSubmit.textContent = 'Log in';
    if (r.ok) {
      ui.loginToken.value = '';
      setRole(r.data && r.data.role, r.data && r.data.name);
      enterDashboard();
      return;
    }
    setLoginError(loginErrorText(r));
    ui.loginToken.select();
  }

  async function doLogout() {
    ui.logout.disabled = true;
    // Close our socket first so the server-side close is not mistaken for an expiry.
    model.loggedIn = false;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    dropSocket();
    const r = await api('POST', '/dashboard/logout');
    ui.logout.disabled = false;
    showLogin(r.ok ? '' : 'Logout request failed (' + errorText(r) + '); the session may still be valid.');
  }

  function resetModel() {
    clearTimeout(snapTimer);
    snapTimer = null;
    model = emptyModel();
  }

  /**
   * The page shows only the controls the session's role may use: an observer
   * none, a coordinator those that steer work, the admin all (data-needs on a
   * control: write, steer or admin; style.css hides the rest).
   */
  function setRole(role, name) {
    const r = role === 'observer' || role === 'coordinator' ? role : 'admin';
    document.documentElement.dataset.role = r;
    ui.roleBadge.textContent = r === 'admin' ? '' : r + (name ? ' ' + str(name) : '');
    ui.roleBadge.hidden = r === 'admin';
  }

  function enterDashboard() {
    resetModel();
    model.loggedIn = true;
    ui.boot.hidden = true;
    ui.loginForm.hidden = true;
    ui.loginView.hidden = true;
    ui.dashboard.hidden = false;
    setLoginError('');
    ui.backupResult.textContent = '';
    ui.submitResult.replaceChildren();
    ui.actionResult.textContent = '';
    markAll();
    flush();
    connect();
    loadTasks(false);
  }

  function showLogin(message) {
    model.loggedIn = false;
    clearTimeout(reconnectTimer);
    reconnectTimer = null;
    dropSocket();
    closeDetail();
    resetModel();
    ui.boot.hidden = true;
    ui.dashboard.hidden = true;
    ui.loginView.hidden = false;
    ui.loginForm.hidden = false;
    setLoginError(message || '');
    ui.loginSubmit.disabled = false;
    ui.loginSubmit.textContent = 'Log in';
    // Leave no fleet data in the DOM once logged out.
    for (const el of [ui.agentsList, ui.alertsList, ui.alertLog, ui.dlList, ui.tasksBody, ui.completionsBody,
      ui.healthConditions, ui.storageConditions, ui.storageFields, ui.rlBody]) el.replaceChildren();
    updateTitle();
    ui.loginToken.focus();
  }

  // ------------------------------------------------------------ wiring

  function onClick(ev) {
    const target = ev.target instanceof Element ? ev.target : null;
    if (!target) return;
    if (target.closest('a[href]')) return; // links (PRs) do their own thing
    const el = target.closest('[data-action]');
    if (!el || el.disabled) return;
    const act = el.dataset.action;
    const targetId = el.dataset.target || el.dataset.taskId; // rows carry data-task-id
    switch (act) {
      case 'open-task': openTask(targetId); break;
      case 'retry': doRetry(targetId); break;
      case 'cancel': doCancel(targetId); break;
      case 'ack': doAck(targetId); break;
      case 'release': doRelease(targetId); break;
      case 'resume-usage': doResumeUsage(targetId); break;
      case 'answer': doAnswer(targetId, el.dataset.answer); break;
      case 'approve': doDecide(targetId, true); break;
      case 'open-topic': loadTopicEvents(targetId); break;
      case 'unsubscribe': doUnsubscribe(targetId); break;
      case 'open-context': openContext(targetId); break;
      case 'open-context-version': openContext(targetId, el.dataset.version); break;
      case 'context-refresh': loadContext(); break;
      case 'context-delete': deleteContext(); break;
      case 'close-detail': closeDetail(); break;
      case 'reconnect-now': reconnectNow(); break;
      case 'backup': doBackup(); break;
      case 'logout': doLogout(); break;
      case 'tasks-more': loadTasks(true); break;
      default: return;
    }
    if (el.tagName === 'TR') ev.preventDefault();
  }

  function onKey(ev) {
    if (ev.key === 'Escape' && !ui.taskDetail.hidden) {
      closeDetail();
      return;
    }
    if ((ev.key === 'Enter' || ev.key === ' ') && ev.target instanceof Element &&
        ev.target.matches('tr[data-action]')) {
      ev.preventDefault();
      openTask(ev.target.dataset.taskId);
    }
  }

  let tickCount = 0;

  function tick() {
    tickCount++;
    if (!model.loggedIn) return;
    if (model.conn.state !== 'live') renderConn();
    renderUptime();
    watchdog();
    for (const el of document.querySelectorAll('[data-countdown]')) {
      const text = countdownText(Number(el.dataset.countdown));
      if (el.textContent !== text) el.textContent = text;
    }
    if (tickCount % REL_REFRESH_TICKS === 0) {
      for (const el of document.querySelectorAll('[data-rel]')) {
        const text = fmtRel(Number(el.dataset.rel));
        if (el.textContent !== text) el.textContent = text;
      }
      if (model.rateLimits && model.rateLimits.limited && Object.keys(model.rateLimits.limited).length) mark('rateLimits');
    }
  }

  function exportState() {
    const m = model;
    return {
      loggedIn: m.loggedIn,
      connection: Object.assign({}, m.conn),
      haveSnapshot: m.haveSnapshot,
      uptime_ms: m.uptimeMs,
      health: m.health,
      agents: Array.from(m.agents.values()),
      queue: m.queue,
      dead_letter_tasks: m.deadLetter,
      recent_completions: m.completions,
      throughput: m.throughput,
      storage: m.storage,
      active_alerts: Array.from(m.alerts.values()),
      alert_log: m.alertLog,
      rate_limits: m.rateLimits,
      charts: m.charts,
      tasks: { rows: m.tasks.rows, next_cursor: m.tasks.nextCursor, filter: m.tasks.filter || null },
      detail: { id: m.detail.id, task: m.detail.task },
    };
  }

  function deepFreeze(o) {
    if (o && typeof o === 'object' && !Object.isFrozen(o)) {
      Object.freeze(o);
      for (const k of Object.keys(o)) deepFreeze(o[k]);
    }
    return o;
  }

  async function boot() {
    grabUi();
    document.addEventListener('click', onClick);
    document.addEventListener('keydown', onKey);
    ui.loginForm.addEventListener('submit', onLogin);
    ui.submitForm.addEventListener('submit', onSubmitTask);
    ui.rulesText.addEventListener('input', function () { ui.rulesText.dataset.dirty = '1'; });
    ui.budgetsText.addEventListener('input', function () { ui.budgetsText.dataset.dirty = '1'; });
    ui.rulesForm.addEventListener('submit', function (ev) {
      ev.preventDefault();
      savePolicy(ui.rulesText, ui.rulesError, '/api/admin/approval-rules',
        function (v) { return { rules: v }; }, 'approval rules');
    });
    ui.budgetsForm.addEventListener('submit', function (ev) {
      ev.preventDefault();
      savePolicy(ui.budgetsText, ui.budgetsError, '/api/admin/budgets',
        function (v) { return v; }, 'daily budgets');
    });
    ui.contextForm.addEventListener('submit', function (ev) { ev.preventDefault(); saveContext(); });
    ui.tasksFilter.addEventListener('submit', function (ev) { ev.preventDefault(); loadTasks(false); });
    ui.questionsList.addEventListener('submit', function (ev) {
      const form = ev.target.closest('.question-form');
      if (!form) return;
      ev.preventDefault();
      if (form.classList.contains('budget-form')) {
        const tk = form.querySelector('.budget-tokens-input');
        const us = form.querySelector('.budget-usd-input');
        const tv = tk ? tk.value.trim() : '';
        const uv = us ? us.value.trim() : '';
        if (tv || uv) doRaise(form.dataset.taskId, tv, uv);
        return;
      }
      const input = form.querySelector('.question-input');
      const text = input ? input.value.trim() : '';
      if (!text) return;
      if (form.classList.contains('reject-form')) doDecide(form.dataset.taskId, false, text);
      else doAnswer(form.dataset.taskId, text);
    });
    ui.tasksFilterStatus.addEventListener('change', function () { loadTasks(false); });
    ui.tasksFilterAgent.addEventListener('input', function () {
      clearTimeout(tasksAgentTimer);
      tasksAgentTimer = setTimeout(function () { loadTasks(false); }, 400);
    });
    window.addEventListener('online', reconnectNow);
    if (typeof ResizeObserver === 'function') {
      let lastWidth = 0;
      const ro = new ResizeObserver(function (entries) {
        const w = Math.round(entries[0].contentRect.width);
        if (w !== lastWidth) { lastWidth = w; mark('charts'); }
      });
      ro.observe(ui.chartQueueDepth);
    } else {
      window.addEventListener('resize', function () { mark('charts'); });
    }
    setInterval(tick, 1000);

    Object.defineProperty(window, 'agentcom', {
      configurable: false,
      enumerable: true,
      value: Object.freeze({
        get state() {
          let copy;
          try { copy = structuredClone(exportState()); } catch (e) { copy = JSON.parse(JSON.stringify(exportState())); }
          return deepFreeze(copy);
        },
      }),
    });

    const r = await api('GET', '/dashboard/session');
    if (r.ok && r.data && r.data.authenticated === true) {
      setRole(r.data.role, r.data.name);
      enterDashboard();
    }
    else showLogin(r.status === 0 ? 'Cannot reach the hub.' : '');
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
