// Create an endpoint, or change one's config: served entities picked from
// the registry, the traffic split (summed as you type; the server has the
// last word and its 400 is shown as it comes), the inference table, and the
// JSON that will be sent.

import { call, enc, type AutoCapture, type Endpoint, type EndpointConfig, type ModelVersion, type Route, type ServedEntity } from '../api';
import { clear, field, h, uid } from '../dom';
import { seed } from '../live';
import { errorBox } from './common';

const sizes = ['Small', 'Medium', 'Large'];
const types = ['CPU', 'GPU_SMALL', 'GPU_MEDIUM', 'GPU_LARGE', 'MULTIGPU_MEDIUM'];

interface Row {
  entity: ServedEntity;
  percent: number;
}

/** defaultName is the server's: <entity_name>-<entity_version>, dots to
 * dashes (API.md). */
function defaultName(e: ServedEntity): string {
  return `${e.entity_name ?? ''}-${e.entity_version ?? ''}`.replace(/\./g, '-');
}

function nameOf(e: ServedEntity): string {
  return e.name || defaultName(e);
}

/** inputOf keeps what a config update takes, dropping read-only fields. */
export function inputOf(e: ServedEntity): ServedEntity {
  const { state: _s, replicas: _r, scaled_to_zero: _z, ...rest } = e;
  return rest;
}

export function editPage(main: HTMLElement, name: string | null): () => void {
  let models: ModelVersion[] = [];
  let rows: Row[] = [];
  let capture: AutoCapture = { enabled: false };
  // Shadow routes are kept as they are: the form edits the real split.
  let shadows: Route[] = [];
  let gone = false;

  const title = name ? `Edit ${name}` : 'Create serving endpoint';
  const nameIn = h('input', { type: 'text', name: 'name', required: true, pattern: '[A-Za-z0-9_-]{1,63}', autocomplete: 'off' });
  const entitiesEl = h('div');
  const splitEl = h('div');
  const sumEl = h('p', { class: 'sum', id: uid('sum'), 'aria-live': 'polite', 'data-testid': 'split-sum' });
  const captureEl = h('div');
  const json = h('pre', { class: 'json', 'data-testid': 'config-json', tabindex: '0', 'aria-label': 'The config as JSON' });
  const result = h('div', { 'data-testid': 'form-result' });
  const submit = h('button', { type: 'submit', class: 'primary' }, name ? 'Update config' : 'Create');

  const form = h(
    'form',
    { class: 'card', novalidate: true, 'aria-labelledby': 'edit-title' },
    h('h1', { id: 'edit-title' }, title),
    name ? null : field('Name', nameIn, '1 to 63 letters, digits, - or _'),
    h('fieldset', null, h('legend', null, 'Served entities'), entitiesEl, h('button', { type: 'button', onclick: () => addRow() }, 'Add served entity')),
    h('fieldset', null, h('legend', null, 'Traffic split'), splitEl, sumEl),
    h('fieldset', null, h('legend', null, 'Inference table'), captureEl),
    h('details', null, h('summary', null, 'JSON'), json),
    result,
    h('div', { class: 'actions' }, submit, h('a', { class: 'button', href: name ? `#/endpoints/${enc(name)}` : '#/' }, 'Cancel')),
  );
  form.addEventListener('submit', save);
  form.addEventListener('input', update);
  form.addEventListener('change', update);
  clear(main, form);

  function config(): EndpointConfig {
    const c: EndpointConfig = {
      served_entities: rows.map((r) => inputOf(r.entity)),
      traffic_config: {
        routes: [
          ...rows.map((r) => ({ served_model_name: nameOf(r.entity), traffic_percentage: r.percent })),
          ...shadows.filter((sh) => rows.some((r) => nameOf(r.entity) === sh.served_model_name)),
        ],
      },
    };
    if (capture.enabled || capture.catalog_name) {
      const { state: _s, ...rest } = capture;
      c.auto_capture_config = rest;
    }
    return c;
  }

  function update(): void {
    const sum = rows.reduce((n, r) => n + r.percent, 0);
    const ok = sum === 100 && rows.every((r) => Number.isInteger(r.percent) && r.percent >= 0 && r.percent <= 100);
    sumEl.textContent = ok ? 'Sum: 100 %' : `Sum: ${sum} %. Percentages must sum to 100; the server will refuse this split.`;
    sumEl.className = ok ? 'sum' : 'sum warn';
    for (const inp of splitEl.querySelectorAll('input')) inp.setAttribute('aria-invalid', String(!ok));
    const body = name ? config() : { name: nameIn.value, config: config() };
    json.textContent = JSON.stringify(body, null, 2);
  }

  function versionsOf(model: string): string[] {
    return models.filter((m) => m.name === model).map((m) => m.version).sort((a, b) => Number(b) - Number(a));
  }

  function addRow(): void {
    const first = models[0];
    rows.push({ entity: { entity_name: first?.name ?? '', entity_version: first ? versionsOf(first.name)[0] : '', workload_size: 'Small', scale_to_zero_enabled: true }, percent: rows.length ? 0 : 100 });
    drawRows();
    const sel = entitiesEl.querySelectorAll('fieldset');
    sel[sel.length - 1]?.querySelector('select')?.focus();
  }

  function drawRows(): void {
    const names = [...new Set(models.map((m) => m.name))].sort();
    clear(
      entitiesEl,
      rows.map((r, i) => {
        const e = r.entity;
        if (e.external_model) {
          return h('fieldset', { class: 'entity' }, h('legend', null, `Served entity ${i + 1}: ${nameOf(e)} (external model, edit it with the API)`));
        }
        const model = h('select', { name: `model-${i}` }, names.map((n) => h('option', { value: n }, n)));
        if (e.entity_name && !names.includes(e.entity_name)) model.append(h('option', { value: e.entity_name }, e.entity_name));
        model.value = e.entity_name ?? '';
        const version = h('select', { name: `version-${i}` });
        const fillVersions = () => {
          const vs = versionsOf(model.value);
          if (e.entity_version && !vs.includes(e.entity_version) && e.entity_name === model.value) vs.push(e.entity_version);
          clear(version, vs.map((v) => h('option', { value: v }, v)));
          version.value = vs.includes(e.entity_version ?? '') ? e.entity_version! : vs[0] ?? '';
          e.entity_version = version.value;
        };
        fillVersions();
        const served = h('input', { type: 'text', name: `served-${i}`, value: e.name ?? '', placeholder: defaultName(e), autocomplete: 'off' });
        const size = h('select', { name: `size-${i}` }, sizes.map((s) => h('option', { value: s }, s)));
        size.value = e.workload_size ?? 'Small';
        const type = h('select', { name: `type-${i}` }, types.map((s) => h('option', { value: s }, s)));
        type.value = e.workload_type ?? 'CPU';
        const zero = h('input', { type: 'checkbox', name: `zero-${i}`, checked: e.scale_to_zero_enabled ?? false });
        model.addEventListener('change', () => {
          e.entity_name = model.value;
          e.entity_version = '';
          fillVersions();
          served.placeholder = defaultName(e);
          drawSplit();
        });
        version.addEventListener('change', () => {
          e.entity_version = version.value;
          served.placeholder = defaultName(e);
          drawSplit();
        });
        served.addEventListener('change', () => {
          e.name = served.value.trim() || undefined;
          drawSplit();
        });
        size.addEventListener('change', () => (e.workload_size = size.value));
        type.addEventListener('change', () => (e.workload_type = type.value === 'CPU' && !e.workload_type ? undefined : type.value));
        zero.addEventListener('change', () => (e.scale_to_zero_enabled = zero.checked));
        const zeroId = uid('zero');
        zero.id = zeroId;
        return h(
          'fieldset',
          { class: 'entity' },
          h('legend', null, `Served entity ${i + 1}`),
          h('div', { class: 'grid' }, field('Model', model), field('Version', version), field('Served entity name', served, 'optional'), field('Workload size', size), field('Workload type', type)),
          h('div', { class: 'check' }, zero, h('label', { for: zeroId }, 'Scale to zero when idle')),
          rows.length > 1
            ? h('button', { type: 'button', class: 'link', onclick: () => { rows.splice(i, 1); drawRows(); } }, `Remove served entity ${i + 1}`)
            : null,
        );
      }),
    );
    drawSplit();
  }

  function drawSplit(): void {
    clear(
      splitEl,
      h(
        'div',
        { class: 'grid' },
        rows.map((r) => {
          const inp = h('input', { type: 'number', min: '0', max: '100', step: '1', inputmode: 'numeric', value: String(r.percent), 'data-split': nameOf(r.entity) });
          inp.addEventListener('input', () => (r.percent = inp.value === '' ? 0 : Number(inp.value)));
          return field(`${nameOf(r.entity)} (%)`, inp);
        }),
      ),
    );
    update();
  }

  function drawCapture(): void {
    const on = h('input', { type: 'checkbox', id: uid('cap'), checked: capture.enabled ?? false });
    const catalog = h('input', { type: 'text', value: capture.catalog_name ?? '', autocomplete: 'off' });
    const schema = h('input', { type: 'text', value: capture.schema_name ?? '', autocomplete: 'off' });
    const prefix = h('input', { type: 'text', value: capture.table_name_prefix ?? '', autocomplete: 'off', placeholder: name ?? 'the endpoint name' });
    on.addEventListener('change', () => (capture.enabled = on.checked));
    catalog.addEventListener('input', () => (capture.catalog_name = catalog.value.trim() || undefined));
    schema.addEventListener('input', () => (capture.schema_name = schema.value.trim() || undefined));
    prefix.addEventListener('input', () => (capture.table_name_prefix = prefix.value.trim() || undefined));
    clear(
      captureEl,
      h('div', { class: 'check' }, on, h('label', { for: on.id }, 'Log every request and response to ClickHouse')),
      h('div', { class: 'grid' }, field('Catalog', catalog), field('Schema', schema), field('Table name prefix', prefix, 'optional')),
    );
  }

  async function save(ev: Event): Promise<void> {
    ev.preventDefault();
    submit.disabled = true;
    clear(result, h('p', { role: 'status' }, 'Sending…'));
    try {
      const ep = name
        ? await call<Endpoint>('PUT', `/api/2.0/serving-endpoints/${enc(name)}/config`, { body: config() })
        : await call<Endpoint>('POST', '/api/2.0/serving-endpoints', { body: { name: nameIn.value.trim(), config: config() } });
      // The endpoint's page starts from this answer (NOT_READY while its
      // replicas start), not from whatever its first read finds a moment
      // later, which may already be READY.
      seed(`/api/2.0/serving-endpoints/${enc(ep.name)}`, ep);
      location.hash = `#/endpoints/${enc(name ?? nameIn.value.trim())}`;
    } catch (e) {
      clear(result, errorBox(e));
      (result.firstElementChild as HTMLElement | null)?.focus?.();
    } finally {
      submit.disabled = false;
    }
  }

  void (async () => {
    try {
      const [ms, ep] = await Promise.all([
        call<{ models: ModelVersion[] }>('GET', '/api/2.0/gantry/models'),
        name ? call<Endpoint>('GET', `/api/2.0/serving-endpoints/${enc(name)}`) : Promise.resolve(null),
      ]);
      if (gone) return;
      models = ms.models ?? [];
      if (ep?.config) {
        const routes = ep.config.traffic_config?.routes ?? [];
        shadows = routes.filter((r) => r.shadow);
        rows = ep.config.served_entities.map((e) => ({ entity: { ...inputOf(e) }, percent: routes.find((r) => r.served_model_name === nameOf(e) && !r.shadow)?.traffic_percentage ?? 0 }));
        capture = { ...(ep.config.auto_capture_config ?? { enabled: false }) };
      } else if (!models.length) {
        clear(result, h('p', { class: 'warn' }, 'The registry has no models yet: ', h('a', { href: '#/models' }, 'upload one'), ' first.'));
      }
      if (!rows.length) addRow();
      else drawRows();
      drawCapture();
      update();
    } catch (e) {
      clear(result, errorBox(e));
    }
  })();
  return () => {
    gone = true;
  };
}
