// One endpoint: its state and rollout, served entities with replicas, the
// traffic split, a "try it" box, charts from the inference table, the A/B
// comparison, drift monitors and worker logs.

import { ApiError, call, enc, query, request, tableOf, type ColSpec, type Endpoint, type ModelVersion, type Monitor, type MonitorMetric, type ReplicaStart, type RouteTable } from '../api';
import { lineChart, pivot, type Chart } from '../chart';
import { announce, clear, field, formatTime, h } from '../dom';
import { poke, watch } from '../live';
import { deploymentBadge, errorBox, stateBadge } from './common';
import { inputOf } from './edit';

export function endpointPage(main: HTMLElement, params: string[]): () => void {
  const name = params[0];
  let ep: Endpoint | null = null;
  let gone = false;
  const timers: number[] = [];

  const head = h('div');
  const rollout = h('div', { 'aria-live': 'polite' });
  const entities = h('section', { 'aria-labelledby': 'entities-h' });
  const split = h('section', { 'aria-labelledby': 'split-h' });
  const tryIt = h('section', { 'aria-labelledby': 'try-h' });
  const charts = h('section', { 'aria-labelledby': 'charts-h' });
  const ab = h('section', { 'aria-labelledby': 'ab-h' });
  const monitors = h('section', { 'aria-labelledby': 'monitors-h' });
  const logs = h('section', { 'aria-labelledby': 'logs-h' });
  const perms = h('section', { 'aria-labelledby': 'perms-h' });
  clear(main, head, rollout, entities, split, tryIt, charts, ab, monitors, logs, perms);

  const splitOut = h('div', { 'data-testid': 'split-result' });
  // abLoad re-reads the A/B table; the charts' timer and button call it.
  let abLoad: (() => void) | null = null;
  let drawnOnce = false;
  // Replica addresses come from the route table, which only admins may
  // read: it is asked for when the caller manages the endpoint, until a
  // 403 says this caller is not an admin.
  let routes: RouteTable | null = null;
  let admin: boolean | null = null;

  // The endpoint as this caller sees it, live (live.ts): each change of
  // state, replicas or cold-start phase redraws what depends on it.
  const show = async (next: Endpoint) => {
    if (gone) return;
    const first = !ep;
    ep = next;
    drawHead();
    drawRollout();
    drawEntities();
    if (first || !split.dataset.dirty) drawSplit();
    if (first) {
      drawTry();
      drawCharts();
      drawAB();
      drawMonitors();
      drawLogs();
      drawPerms();
    }
    drawnOnce = true;
    if (admin !== false && ep.permission_level === 'CAN_MANAGE') {
      try {
        routes = await call<RouteTable>('GET', '/api/2.0/gantry/routes');
        admin = true;
      } catch (e) {
        if (e instanceof ApiError && e.status === 403) admin = false;
      }
      if (!gone) drawEntities();
    }
  };
  const unwatch = watch<Endpoint>(
    `/api/2.0/serving-endpoints/${enc(name)}`,
    show,
    (e) => {
      if (gone) return;
      if (e instanceof ApiError && e.status === 404 && drawnOnce) {
        unwatch();
        clear(main, h('h1', null, name), h('p', null, 'This endpoint was deleted, or you may no longer view it. ', h('a', { href: '#/' }, 'Back to endpoints')));
        return;
      }
      if (!drawnOnce) clear(head, h('h1', null, name), errorBox(e));
    },
  );

  function drawHead(): void {
    const e = ep!;
    clear(
      head,
      h(
        'div',
        { class: 'titlebar' },
        h('h1', null, e.name, ' ', stateBadge(e)),
        // Changing or deleting needs CAN_MANAGE: others do not get
        // buttons that can only answer 403.
        e.permission_level === 'CAN_MANAGE'
          ? h(
              'div',
              { class: 'actions' },
              h('a', { class: 'button', href: `#/endpoints/${enc(e.name)}/edit` }, 'Edit config'),
              h('button', { type: 'button', class: 'danger', onclick: remove }, 'Delete'),
            )
          : null,
      ),
      h(
        'dl',
        { class: 'facts' },
        h('dt', null, 'Config version'), h('dd', null, String(e.config?.config_version ?? '—')),
        h('dt', null, 'Creator'), h('dd', null, e.creator ?? '—'),
        h('dt', null, 'Created'), h('dd', null, formatTime(e.creation_timestamp)),
        h('dt', null, 'Updated'), h('dd', null, formatTime(e.last_updated_timestamp)),
        h('dt', null, 'Invocation URL'), h('dd', null, h('code', null, e.endpoint_url ?? `/serving-endpoints/${e.name}/invocations`)),
        h('dt', null, 'Inference table'), h('dd', null, tableOf(e) ?? 'off'),
        e.tags.length ? [h('dt', null, 'Tags'), h('dd', null, e.tags.map((t) => `${t.key}${t.value ? `=${t.value}` : ''}`).join(', '))] : null,
      ),
    );
  }

  async function remove(): Promise<void> {
    if (!confirm(`Delete serving endpoint ${name}? Its workers stop and its monitors are deleted.`)) return;
    try {
      await call('DELETE', `/api/2.0/serving-endpoints/${enc(name)}`);
      poke();
      location.hash = '#/';
    } catch (e) {
      clear(rollout, errorBox(e));
    }
  }

  // The same states `gantry endpoints create --wait` prints: the endpoint's
  // and, while an update rolls out, each new entity's.
  function drawRollout(): void {
    const e = ep!;
    const parts: HTMLElement[] = [];
    if (e.pending_config) {
      parts.push(
        h(
          'div',
          { class: 'card busy', 'data-testid': 'rollout' },
          h('h2', null, `Update to config ${ (e.config?.config_version ?? 0) + 1} in progress`),
          h('p', null, `Started ${formatTime(e.pending_config.start_time)}; the current config serves until every new entity is ready.`),
          h('ul', null, e.pending_config.served_entities.map((s) => h('li', null, `${s.name}: `, deploymentBadge(s.state?.deployment), ` ${s.replicas?.ready ?? 0}/${s.replicas?.desired ?? 0} ready`, s.state?.deployment_state_message ? ` — ${s.state.deployment_state_message}` : ''))),
        ),
      );
    }
    if (e.state.config_update === 'UPDATE_FAILED') {
      parts.push(h('div', { class: 'error', role: 'alert' }, h('strong', null, 'The last config update failed'), ': ', e.state.message ?? 'no reason given', '. The previous config still serves.'));
    }
    clear(rollout, parts);
  }

  function drawEntities(): void {
    const e = ep!;
    const split = e.config?.traffic_config?.routes ?? [];
    const rt = routes?.endpoints.find((x) => x.name === e.name);
    clear(
      entities,
      h('h2', { id: 'entities-h' }, 'Served entities'),
      h(
        'table',
        { class: 'list' },
        h('thead', null, h('tr', null, ['Name', 'Model', 'Workload', 'Deployment', 'Replicas ready / desired', 'Traffic', 'Replicas and their cold starts'].map((c) => h('th', { scope: 'col' }, c)))),
        h(
          'tbody',
          null,
          (e.config?.served_entities ?? []).map((s) => {
            const pct = split.filter((r) => r.served_model_name === s.name).map((r) => `${r.traffic_percentage} %${r.shadow ? ' (shadow)' : ''}`).join(', ');
            const addrs = new Map((rt?.entities.find((x) => x.name === s.name)?.replicas ?? []).map((r) => [r.id, r.addr]));
            return h(
              'tr',
              { 'data-entity': s.name ?? '' },
              h('th', { scope: 'row' }, s.name ?? ''),
              h('td', null, s.external_model ? `external: ${String((s.external_model as { provider?: string }).provider ?? '')}` : `${s.entity_name} v${s.entity_version}`),
              h('td', null, `${s.workload_size ?? 'custom'} ${s.workload_type ?? 'CPU'}`, s.scale_to_zero_enabled ? h('span', { class: 'hint' }, ', scales to zero') : null),
              h('td', null, deploymentBadge(s.state?.deployment), s.state?.deployment_state_message ? h('div', { class: 'hint' }, s.state.deployment_state_message) : null),
              h('td', { class: 'num', 'data-testid': 'replicas' }, `${s.replicas?.ready ?? 0} / ${s.replicas?.desired ?? 0}`, s.scaled_to_zero ? h('div', { class: 'hint' }, 'scaled to zero') : null),
              h('td', { class: 'num' }, pct || '0 %'),
              h('td', { 'data-testid': 'starts' }, starts(s.replicas?.starts ?? [], addrs, !!s.external_model)),
            );
          }),
        ),
      ),
    );
  }

  // Each replica's cold start, as the driver follows it: the phase it is
  // in and how long each finished phase took (the phases of
  // gantry_cold_start_phase_seconds). Addresses are shown to admins.
  function starts(list: ReplicaStart[], addrs: Map<string, string>, external: boolean): HTMLElement {
    if (external) return h('span', { class: 'hint' }, 'none: an external model');
    if (!list.length) return h('span', { class: 'hint' }, 'none');
    const took = (from?: number, to?: number) => (from && to ? `${Math.max(0, to - from)} ms` : null);
    const names: Record<string, string> = {
      schedule: 'scheduling',
      download: 'downloading the model',
      process_start: 'starting the process',
      model_load: 'loading the model',
      ready: 'ready',
      first_response: 'answered its first request',
      first_token: 'generated its first token',
    };
    // After ready, the phase names how the first request was answered.
    const last: Record<string, string> = { first_response: 'first response', first_token: 'first token' };
    const done = (phase: string) => phase === 'ready' || phase in last;
    return h(
      'ul',
      { class: 'starts' },
      list.map((r) => {
        const phases = [
          // On Nomad the artifact's download comes between scheduling
          // and the process start.
          ['schedule', took(r.requested_ms, r.downloading_ms ?? r.started_ms)],
          ['download', took(r.downloading_ms, r.started_ms)],
          ['process start', took(r.started_ms, r.answered_ms)],
          ['model load', took(r.answered_ms, r.ready_ms)],
          // The first request's own time, from its arrival: the wait
          // between ready and that request is the client's, not the
          // cold start's.
          [last[r.phase] ?? 'first response', took(r.first_request_ms, r.first_response_ms)],
        ].filter(([, t]) => t);
        const addr = addrs.get(r.id);
        return h(
          'li',
          { 'data-replica': r.id, 'data-phase': r.phase },
          h('span', { class: `badge ${done(r.phase) ? 'good' : 'busy'}` }, names[r.phase] ?? r.phase),
          ' ',
          h('code', null, r.id),
          addr ? [' at ', h('code', null, addr)] : null,
          phases.length ? h('div', { class: 'hint phases' }, phases.map(([p, t]) => `${p} ${t}`).join(' · ')) : null,
        );
      }),
    );
  }

  // The split alone: PUT .../config with the same entities and new
  // percentages, which the server applies at once.
  function drawSplit(): void {
    const e = ep!;
    const ents = e.config?.served_entities ?? [];
    const routes = e.config?.traffic_config?.routes ?? [];
    if (e.permission_level !== 'CAN_MANAGE') {
      // Only managers may change it (the server would answer 403).
      const now = routes.map((r) => `${r.served_model_name} ${r.traffic_percentage} %${r.shadow ? ' (shadow)' : ''}`).join(', ');
      clear(split, h('h2', { id: 'split-h' }, 'Traffic split'), h('p', null, now || `All traffic goes to ${ents[0]?.name ?? 'the only entity'}.`, h('span', { class: 'hint' }, ' Managers of this endpoint may change it.')));
      return;
    }
    const shadows = routes.filter((r) => r.shadow);
    const inputs = ents.map((s) => {
      const cur = routes.find((r) => r.served_model_name === s.name && !r.shadow)?.traffic_percentage ?? 0;
      return h('input', { type: 'number', min: '0', max: '100', step: '1', inputmode: 'numeric', value: String(cur), 'data-split': s.name ?? '' });
    });
    const sum = h('p', { class: 'sum', 'aria-live': 'polite', 'data-testid': 'split-sum' });
    const out = splitOut; // survives the redraws that live updates make
    const check = () => {
      const total = inputs.reduce((n, i) => n + (Number(i.value) || 0), 0);
      const ok = total === 100;
      sum.textContent = ok ? 'Sum: 100 %' : `Sum: ${total} %. Percentages must sum to 100; the server will refuse this split.`;
      sum.className = ok ? 'sum' : 'sum warn';
      for (const i of inputs) i.setAttribute('aria-invalid', String(!ok));
    };
    const form = h(
      'form',
      { class: 'card', 'aria-labelledby': 'split-h' },
      h('h2', { id: 'split-h' }, 'Traffic split'),
      h('div', { class: 'grid' }, ents.map((s, i) => field(`${s.name} (%)`, inputs[i]))),
      sum,
      out,
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Apply split')),
    );
    form.addEventListener('input', () => {
      split.dataset.dirty = '1';
      clear(out);
      check();
    });
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const cfg = {
        served_entities: ents.map(inputOf),
        traffic_config: {
          routes: [...ents.map((s, i) => ({ served_model_name: s.name!, traffic_percentage: Number(inputs[i].value) })), ...shadows],
        },
        auto_capture_config: e.config?.auto_capture_config ? (({ state: _s, ...rest }) => rest)(e.config.auto_capture_config) : undefined,
      };
      clear(out, h('p', { role: 'status' }, 'Sending…'));
      try {
        await call('PUT', `/api/2.0/serving-endpoints/${enc(name)}/config`, { body: cfg });
        delete split.dataset.dirty;
        clear(out, h('p', { role: 'status', class: 'ok' }, 'Split applied.'));
        poke();
      } catch (err) {
        clear(out, errorBox(err));
      }
    });
    clear(split, ents.length > 1 || routes.length > 1 ? form : [h('h2', { id: 'split-h' }, 'Traffic split'), h('p', null, `All traffic goes to ${ents[0]?.name ?? 'the only entity'}. Add an entity (Edit config) to split it.`)]);
    check();
  }

  // "Try it": an invocation with an example built from the model's
  // signature, sent through the traffic split or pinned to one entity.
  function drawTry(): void {
    const e = ep!;
    const ents = (e.config?.served_entities ?? []).filter((s) => !s.external_model);
    const target = h('select', null, h('option', { value: '' }, 'Traffic split'), ents.map((s) => h('option', { value: s.name ?? '' }, `Only ${s.name}`)));
    const body = h('textarea', { rows: '8', spellcheck: 'false', class: 'mono' }, '{}');
    const out = h('div', { 'data-testid': 'try-result', 'aria-live': 'polite' });
    const send = h('button', { type: 'submit', class: 'primary' }, 'Send request');
    const form = h(
      'form',
      { class: 'card', 'aria-labelledby': 'try-h' },
      h('h2', { id: 'try-h' }, 'Try it'),
      h('div', { class: 'grid' }, field('Send to', target)),
      field('Request body (MLflow scoring protocol)', body),
      h('div', { class: 'actions' }, send),
      out,
    );
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      send.disabled = true;
      const path = target.value ? `/serving-endpoints/${enc(name)}/served-models/${enc(target.value)}/invocations` : `/serving-endpoints/${enc(name)}/invocations`;
      const t0 = performance.now();
      clear(out, h('p', { role: 'status' }, 'Waiting for the answer (a scaled-to-zero entity starts first)…'));
      try {
        const a = await request<unknown>('POST', path, { raw: body.value, contentType: 'application/json' });
        const ms = Math.round(performance.now() - t0);
        clear(
          out,
          h('p', { class: 'ok' }, `200 in ${ms} ms from ${a.headers.get('served-model-name') ?? '?'}`, h('span', { class: 'hint' }, ` request ${a.headers.get('x-request-id') ?? ''}`)),
          h('pre', { class: 'json', 'data-testid': 'prediction' }, JSON.stringify(a.data, null, 2)),
        );
        announce('Prediction received');
      } catch (err) {
        clear(out, errorBox(err));
      } finally {
        send.disabled = false;
      }
    });
    clear(tryIt, form);
    const first = ents[0];
    if (first?.entity_name) {
      void call<ModelVersion>('GET', `/api/2.0/gantry/models/${enc(first.entity_name)}/versions/${enc(first.entity_version ?? '')}`)
        .then((m) => {
          body.value = JSON.stringify(example(m.signature?.inputs ?? []), null, 2);
        })
        .catch(() => {
          body.value = JSON.stringify({ instances: [[0]] }, null, 2);
        });
    }
  }

  // Charts from the inference table's per-minute view, the last hour,
  // re-read every 10 s: rows reach ClickHouse a few seconds after the
  // answer (capture → Kafka → logger).
  function drawCharts(): void {
    const e = ep!;
    if (tableOf(e) && e.permission_level !== 'CAN_MANAGE') {
      // The table holds callers' payloads: its managers' only.
      clear(charts, h('h2', { id: 'charts-h' }, 'Traffic'), h('p', { class: 'hint' }, 'Charts read the inference table, which only managers of this endpoint may query.'));
      return;
    }
    if (!tableOf(e)) {
      clear(charts, h('h2', { id: 'charts-h' }, 'Traffic'), h('p', null, 'Charts of requests, errors and latency need the inference table: turn it on in ', h('a', { href: `#/endpoints/${enc(name)}/edit` }, 'Edit config'), '.'));
      return;
    }
    const req = lineChart('Requests per minute', 'requests', 'chart-requests');
    const err = lineChart('Errors per minute', 'errors', 'chart-errors');
    const lat = lineChart('Latency p50 / p99 (ms)', 'ms', 'chart-latency');
    const note = h('p', { class: 'hint', role: 'status' });
    const refresh = h('button', { type: 'button', onclick: () => { void load(); abLoad?.(); } }, 'Refresh charts');
    clear(charts, h('div', { class: 'titlebar' }, h('h2', { id: 'charts-h' }, 'Traffic, last hour'), refresh), note, h('div', { class: 'charts' }, req.el, err.el, lat.el));
    const load = async () => {
      try {
        const r = await query(name, 'SELECT toUnixTimestamp(minute) AS t, served_entity, requests, errors, p50_ms, p99_ms FROM {table}_per_minute WHERE minute >= now() - 3600 ORDER BY t');
        if (gone) return;
        const rows = r.rows.map((x) => ({ x: Number(x[0]), e: x[1], req: Number(x[2]), err: Number(x[3]), p50: Number(x[4]), p99: Number(x[5]) }));
        update(req, rows.map((x) => ({ x: x.x, key: x.e, value: x.req })));
        update(err, rows.map((x) => ({ x: x.x, key: x.e, value: x.err })));
        update(lat, [...rows.map((x) => ({ x: x.x, key: `${x.e} p50`, value: x.p50 })), ...rows.map((x) => ({ x: x.x, key: `${x.e} p99`, value: x.p99 }))]);
        note.textContent = `Read ${new Date().toLocaleTimeString()}.`;
      } catch (er) {
        note.textContent = er instanceof ApiError ? `Could not read the inference table: ${er.message}` : String(er);
      }
    };
    void load();
    timers.push(
      window.setInterval(() => {
        if (document.hidden) return;
        void load();
        abLoad?.();
      }, 10_000),
    );
  }

  function update(c: Chart, rows: { x: number; key: string; value: number | null }[]): void {
    const { xs, byKey } = pivot(rows);
    c.update(xs, [...byKey.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([label, values]) => ({ label, values })));
  }

  function drawAB(): void {
    const e = ep!;
    if (!tableOf(e) || e.permission_level !== 'CAN_MANAGE') {
      clear(ab);
      return;
    }
    const out = h('div');
    const since = h('select', null, ['15m', '1h', '24h'].map((s) => h('option', { value: s }, s)));
    since.value = '1h';
    const secs: Record<string, number> = { '15m': 900, '1h': 3600, '24h': 86400 };
    const load = async () => {
      try {
        const r = await query(
          name,
          `SELECT served_entity, shadow, count() AS requests, countIf(status_code >= 400) / count() AS error_rate, quantileExact(0.5)(execution_time_ms) AS p50, quantileExact(0.99)(execution_time_ms) AS p99 FROM {table} FINAL WHERE timestamp_ms >= (toUInt64(now()) - ${secs[since.value]}) * 1000 GROUP BY served_entity, shadow ORDER BY served_entity, shadow`,
        );
        clear(
          out,
          r.rows.length
            ? h(
                'table',
                { class: 'list' },
                h('thead', null, h('tr', null, ['Served entity', 'Shadow', 'Requests', 'Error rate', 'p50 ms', 'p99 ms'].map((c) => h('th', { scope: 'col' }, c)))),
                h('tbody', null, r.rows.map((x) => h('tr', null, h('th', { scope: 'row' }, x[0]), h('td', null, x[1] === '1' ? 'yes' : ''), h('td', { class: 'num' }, x[2]), h('td', { class: 'num' }, `${(Number(x[3]) * 100).toFixed(1)} %`), h('td', { class: 'num' }, x[4]), h('td', { class: 'num' }, x[5])))),
              )
            : h('p', { class: 'hint' }, 'No requests in this window.'),
        );
      } catch (er) {
        clear(out, errorBox(er));
      }
    };
    since.addEventListener('change', () => void load());
    abLoad = () => void load();
    clear(ab, h('h2', { id: 'ab-h' }, 'A/B comparison'), h('p', { class: 'hint' }, 'Per served entity from the inference table; ', h('code', null, 'gantry ab-report'), ' adds predictions and accuracy against labels.'), h('div', { class: 'grid' }, field('Window', since)), out);
    void load();
  }

  async function drawMonitors(): Promise<void> {
    clear(monitors, h('h2', { id: 'monitors-h' }, 'Drift monitors'));
    try {
      const all = (await call<{ monitors: Monitor[] }>('GET', '/api/2.0/gantry/monitors')).monitors ?? [];
      const mine = all.filter((m) => m.endpoint === name);
      if (!mine.length) {
        monitors.append(h('p', { class: 'hint' }, 'No monitors watch this endpoint (', h('code', null, 'gantry monitors create'), ').'));
        return;
      }
      for (const m of mine) {
        const box = h('div', { class: 'card' }, h('h3', null, `${m.name} (every ${m.granularity})`));
        monitors.append(box);
        try {
          const rep = await call<{ drift_metrics: MonitorMetric[]; profile_metrics: MonitorMetric[] }>('GET', `/api/2.0/gantry/monitors/${enc(m.name)}/report?windows=24`);
          const drift = rep.drift_metrics ?? [];
          const chart = lineChart(`${m.name}: drift metrics`, 'value', `chart-drift-${m.name}`);
          box.append(chart.el);
          update(chart, drift.filter((d) => d.value !== null).map((d) => ({ x: Date.parse(d.window_start) / 1000, key: `${d.served_entity} ${d.column} ${d.metric}${d.drift_type ? ` (${d.drift_type})` : ''}${d.slice_key ? ` [${d.slice_key}=${d.slice_value}]` : ''}`, value: d.value })));
          const alerts = drift.filter((d) => d.crossed);
          box.append(
            h('h4', null, `Alerts (${alerts.length})`),
            alerts.length
              ? h('ul', null, alerts.map((a) => h('li', { class: 'warn' }, `${new Date(a.window_start).toLocaleString()}: ${a.served_entity} ${a.column} ${a.metric} = ${a.value} (threshold ${a.threshold})`)))
              : h('p', { class: 'hint' }, 'No threshold crossed in the last 24 windows.'),
          );
        } catch (er) {
          box.append(errorBox(er));
        }
      }
    } catch (er) {
      monitors.append(errorBox(er));
    }
  }

  function drawLogs(): void {
    const ents = (ep!.config?.served_entities ?? []).filter((s) => !s.external_model);
    if (!ents.length) {
      clear(logs);
      return;
    }
    const which = h('select', null, ents.map((s) => h('option', { value: s.name ?? '' }, s.name ?? '')));
    const pre = h('pre', { class: 'logs', tabindex: '0', 'aria-label': 'Worker logs' });
    const load = async () => {
      try {
        const r = await call<{ logs: string }>('GET', `/api/2.0/serving-endpoints/${enc(name)}/served-models/${enc(which.value)}/logs`);
        pre.textContent = r.logs || '(empty)';
        pre.scrollTop = pre.scrollHeight;
      } catch (er) {
        pre.textContent = er instanceof ApiError ? `${er.code}: ${er.message}` : String(er);
      }
    };
    which.addEventListener('change', () => void load());
    clear(logs, h('div', { class: 'titlebar' }, h('h2', { id: 'logs-h' }, 'Worker logs'), h('button', { type: 'button', onclick: () => void load() }, 'Refresh logs')), h('div', { class: 'grid' }, field('Served entity', which)), pre);
    void load();
  }

  // The endpoint's access control list, which its managers may read and
  // change: PATCH adds or changes one principal's level, PUT replaces the
  // direct grants (a removal). The server's 400 (an unknown principal, a
  // level this object does not take) and 403 show as they come.
  function drawPerms(): void {
    const e = ep!;
    const mine = e.permission_level ?? 'unknown';
    const path = `/api/2.0/permissions/serving-endpoints/${enc(e.id)}`;
    const table = h('div', { 'data-testid': 'acl' });
    const out = h('div', { 'data-testid': 'perms-result' });
    clear(perms, h('h2', { id: 'perms-h' }, 'Permissions'), h('p', null, `Your level: ${mine}`), table, out);
    if (mine !== 'CAN_MANAGE') {
      table.append(h('p', { class: 'hint' }, 'Only managers of this endpoint see who else may use it.'));
      return;
    }
    let acl: Acl = {};

    const show = (a: Acl) => {
      acl = a;
      const list = a.access_control_list ?? [];
      clear(
        table,
        h(
          'table',
          { class: 'list' },
          h('thead', null, h('tr', null, ['Principal', 'Kind', 'Levels', 'Change'].map((c) => h('th', { scope: 'col' }, c)))),
          h(
            'tbody',
            null,
            list.map((x) => {
              const p = principalOf(x);
              const direct = grantsOf(x, e.creator);
              return h(
                'tr',
                { 'data-principal': p.name },
                h('th', { scope: 'row' }, p.name, x.display_name ? h('span', { class: 'hint' }, ` (${x.display_name})`) : null),
                h('td', null, p.label),
                h(
                  'td',
                  null,
                  (x.all_permissions ?? [])
                    .map((l) => `${l.permission_level}${l.inherited ? ' (inherited)' : ''}`)
                    .concat(p.name === e.creator && !(x.all_permissions ?? []).some((l) => l.inherited) ? ['owner'] : [])
                    .join(', '),
                ),
                h('td', null, direct.length ? h('button', { type: 'button', 'aria-label': `Remove ${p.name}`, onclick: () => void removeGrant(p.key, p.name) }, 'Remove') : null),
              );
            }),
          ),
        ),
      );
    };

    const load = async () => {
      try {
        show(await call<Acl>('GET', path));
      } catch (er) {
        clear(table, errorBox(er));
      }
    };

    // Removing one principal: PUT the direct grants of every other.
    const removeGrant = async (key: PrincipalKey, who: string) => {
      const rest: AclEntry[] = [];
      for (const x of acl.access_control_list ?? []) {
        const p = principalOf(x);
        if (p.name === who && p.key === key) continue;
        for (const level of grantsOf(x, e.creator)) rest.push({ [p.key]: p.name, permission_level: level });
      }
      clear(out, h('p', { role: 'status' }, 'Sending…'));
      try {
        show(await call<Acl>('PUT', path, { body: { access_control_list: rest } }));
        clear(out, h('p', { role: 'status', class: 'ok' }, `Removed ${who}.`));
      } catch (er) {
        clear(out, errorBox(er));
      }
    };

    const kind = h('select', null, h('option', { value: 'user_name' }, 'User'), h('option', { value: 'group_name' }, 'Group'), h('option', { value: 'service_principal_name' }, 'Service principal'));
    const who = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false' });
    const level = h('select', null, ['CAN_VIEW', 'CAN_QUERY', 'CAN_MANAGE'].map((l) => h('option', { value: l }, l)));
    level.value = 'CAN_QUERY';
    const form = h(
      'form',
      { class: 'card', 'aria-label': 'Grant a permission' },
      h('div', { class: 'grid' }, field('Principal kind', kind), field('Principal name', who, 'a userName, a group name or a service principal applicationId'), field('Permission level', level)),
      h('div', { class: 'actions' }, h('button', { type: 'submit' }, 'Grant')),
    );
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const name = who.value.trim();
      clear(out, h('p', { role: 'status' }, 'Sending…'));
      try {
        show(await call<Acl>('PATCH', path, { body: { access_control_list: [{ [kind.value]: name, permission_level: level.value }] } }));
        clear(out, h('p', { role: 'status', class: 'ok' }, `Granted ${level.value} to ${name}.`));
        who.value = '';
      } catch (er) {
        clear(out, errorBox(er));
      }
    });
    perms.insertBefore(form, out);
    void load();
  }

  return () => {
    gone = true;
    unwatch();
    for (const t of timers) clearInterval(t);
  };
}

type PrincipalKey = 'user_name' | 'group_name' | 'service_principal_name';

interface AclEntry {
  user_name?: string;
  group_name?: string;
  service_principal_name?: string;
  permission_level?: string;
}

interface AclView extends AclEntry {
  display_name?: string;
  all_permissions?: { permission_level: string; inherited?: boolean }[];
}

interface Acl {
  access_control_list?: AclView[];
}

function principalOf(x: AclEntry): { key: PrincipalKey; name: string; label: string } {
  if (x.user_name) return { key: 'user_name', name: x.user_name, label: 'user' };
  if (x.group_name) return { key: 'group_name', name: x.group_name, label: 'group' };
  return { key: 'service_principal_name', name: x.service_principal_name ?? '?', label: 'service principal' };
}

/** grantsOf is an entry's direct grants: neither inherited (the admins
 * group's) nor the owner's CAN_MANAGE, which the API lists first and no
 * PUT can take away. */
function grantsOf(x: AclView, creator?: string): string[] {
  const levels = (x.all_permissions ?? []).filter((l) => !l.inherited).map((l) => l.permission_level);
  if (creator && principalOf(x).name === creator && levels[0] === 'CAN_MANAGE') levels.shift();
  return levels;
}

/** example is one row for a signature, in dataframe_split form. */
export function example(cols: ColSpec[]): unknown {
  if (!cols.length) return { instances: [[0]] };
  const value = (t: string): unknown => {
    switch (t) {
      case 'string':
        return 'a';
      case 'boolean':
        return true;
      case 'integer':
      case 'long':
        return 1;
      default:
        return 0.5;
    }
  };
  return { dataframe_split: { columns: cols.map((c, i) => c.name ?? `c${i}`), data: [cols.map((c) => value(c.type))] } };
}

