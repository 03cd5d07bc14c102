// The endpoint list: state, entities, replicas, and traffic from each
// endpoint's inference table; filter and sort; live.

import { enc, query, tableOf, type Endpoint } from '../api';
import { clear, field, h } from '../dom';
import { watch } from '../live';
import { stateBadge, errorBox } from './common';

interface Traffic {
  perMin: number;
  errorRate: number;
}

type SortKey = 'name' | 'state' | 'replicas' | 'rpm' | 'errors';

export function endpointsPage(main: HTMLElement): () => void {
  let endpoints: Endpoint[] = [];
  const traffic = new Map<string, Traffic | null>();
  let trafficAt = 0;
  let sort: SortKey = 'name';
  let desc = false;

  const filter = h('input', { type: 'search', placeholder: 'name, model or tag' });
  const stateSel = h(
    'select',
    null,
    h('option', { value: '' }, 'Any'),
    h('option', { value: 'READY' }, 'Ready'),
    h('option', { value: 'NOT_READY' }, 'Not ready'),
    h('option', { value: 'IN_PROGRESS' }, 'Updating'),
    h('option', { value: 'UPDATE_FAILED' }, 'Update failed'),
  );
  const status = h('div', { role: 'status', class: 'status' });
  const body = h('div');
  filter.addEventListener('input', draw);
  stateSel.addEventListener('change', draw);

  clear(
    main,
    h('div', { class: 'titlebar' }, h('h1', null, 'Serving endpoints'), h('a', { class: 'button primary', href: '#/create' }, 'Create serving endpoint')),
    h('div', { class: 'filters', role: 'search' }, field('Filter', filter), field('State', stateSel)),
    status,
    body,
  );

  function replicas(ep: Endpoint): [number, number] {
    let ready = 0;
    let desired = 0;
    for (const e of ep.config?.served_entities ?? []) {
      ready += e.replicas?.ready ?? 0;
      desired += e.replicas?.desired ?? 0;
    }
    return [ready, desired];
  }

  function value(ep: Endpoint, k: SortKey): string | number {
    const t = traffic.get(ep.name);
    switch (k) {
      case 'name':
        return ep.name;
      case 'state':
        return `${ep.state.ready}/${ep.state.config_update}`;
      case 'replicas':
        return replicas(ep)[0];
      case 'rpm':
        return t ? t.perMin : -1;
      case 'errors':
        return t ? t.errorRate : -1;
    }
  }

  function sortButton(k: SortKey, label: string): HTMLElement {
    const on = sort === k;
    return h(
      'th',
      { scope: 'col', 'aria-sort': on ? (desc ? 'descending' : 'ascending') : 'none' },
      h(
        'button',
        {
          type: 'button',
          class: 'sort',
          onclick: () => {
            desc = sort === k ? !desc : false;
            sort = k;
            draw();
          },
        },
        label,
        h('span', { 'aria-hidden': 'true' }, on ? (desc ? ' ▼' : ' ▲') : ''),
      ),
    );
  }

  function draw(): void {
    const q = filter.value.trim().toLowerCase();
    const st = stateSel.value;
    const shown = endpoints.filter((ep) => {
      if (st && ep.state.ready !== st && ep.state.config_update !== st) return false;
      if (!q) return true;
      const hay = [ep.name, ...(ep.config?.served_entities ?? []).map((e) => `${e.name} ${e.entity_name} ${e.entity_version}`), ...ep.tags.map((t) => `${t.key}=${t.value ?? ''}`)];
      return hay.join(' ').toLowerCase().includes(q);
    });
    shown.sort((a, b) => {
      const va = value(a, sort);
      const vb = value(b, sort);
      const c = typeof va === 'number' && typeof vb === 'number' ? va - vb : String(va).localeCompare(String(vb));
      return desc ? -c : c;
    });
    if (!endpoints.length) {
      clear(body, h('p', { class: 'empty' }, 'No serving endpoints yet. ', h('a', { href: '#/create' }, 'Create one'), '.'));
      return;
    }
    clear(
      body,
      h(
        'table',
        { class: 'list', 'aria-label': 'Serving endpoints' },
        h(
          'thead',
          null,
          h('tr', null, sortButton('name', 'Name'), sortButton('state', 'State'), h('th', { scope: 'col' }, 'Served entities'), sortButton('replicas', 'Replicas ready / desired'), sortButton('rpm', 'Requests/min'), sortButton('errors', 'Error rate')),
        ),
        h(
          'tbody',
          null,
          shown.map((ep) => {
            const [ready, desired] = replicas(ep);
            const t = traffic.get(ep.name);
            const zero = (ep.config?.served_entities ?? []).length > 0 && (ep.config?.served_entities ?? []).every((e) => e.scaled_to_zero);
            return h(
              'tr',
              { 'data-endpoint': ep.name },
              h('th', { scope: 'row' }, h('a', { href: `#/endpoints/${enc(ep.name)}` }, ep.name)),
              h('td', null, stateBadge(ep)),
              h('td', null, (ep.config?.served_entities ?? []).map((e) => h('div', null, e.name ?? '', h('span', { class: 'hint' }, e.external_model ? ' external' : ` ${e.entity_name} v${e.entity_version}`)))),
              h('td', { class: 'num' }, `${ready} / ${desired}`, zero ? h('span', { class: 'hint' }, ' scaled to zero') : null),
              h('td', { class: 'num' }, t ? t.perMin.toFixed(1) : h('span', { class: 'hint', title: tableOf(ep) ? 'loading' : 'no inference table' }, '—')),
              h('td', { class: 'num' }, t ? `${(t.errorRate * 100).toFixed(1)} %` : h('span', { class: 'hint' }, '—')),
            );
          }),
        ),
      ),
    );
  }

  // Traffic comes from each endpoint's inference table (the per-minute
  // view, last 5 minutes); it changes slowly, so it is read every 30 s, not
  // on every route change.
  async function loadTraffic(): Promise<void> {
    trafficAt = Date.now();
    await Promise.all(
      endpoints.map(async (ep) => {
        if (!tableOf(ep)) {
          traffic.set(ep.name, null);
          return;
        }
        try {
          const r = await query(ep.name, 'SELECT sum(requests), sum(errors) FROM {table}_per_minute WHERE minute >= now() - 300');
          const [req, err] = (r.rows[0] ?? ['0', '0']).map(Number);
          traffic.set(ep.name, { perMin: req / 5, errorRate: req ? err / req : 0 });
        } catch {
          traffic.set(ep.name, null);
        }
      }),
    );
    draw();
  }

  let gone = false;
  // The list as this caller may see it, live (live.ts).
  const unwatch = watch<{ endpoints?: Endpoint[] }>(
    '/api/2.0/serving-endpoints',
    (r) => {
      if (gone) return;
      endpoints = r.endpoints ?? [];
      status.textContent = `${endpoints.length} endpoint${endpoints.length === 1 ? '' : 's'}`;
      draw();
      if (Date.now() - trafficAt > 30_000) void loadTraffic();
    },
    (e) => {
      if (!gone) clear(body, errorBox(e));
    },
  );
  return () => {
    gone = true;
    unwatch();
  };
}
