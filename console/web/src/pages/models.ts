// The model registry: versions with flavors and signatures, and uploads of
// a model directory packed as tar.gz (what `gantry models upload` sends).

import { call, enc, type ModelVersion } from '../api';
import { clear, field, formatBytes, formatTime, h } from '../dom';
import { errorBox } from './common';

export function modelsPage(main: HTMLElement): () => void {
  let gone = false;
  const list = h('div');
  const nameIn = h('input', { type: 'text', name: 'model-name', required: true, autocomplete: 'off', pattern: '[A-Za-z0-9_.\\-]+' });
  const file = h('input', { type: 'file', name: 'archive', accept: '.tar.gz,.tgz,application/gzip', required: true });
  const out = h('div', { 'data-testid': 'upload-result' });
  const send = h('button', { type: 'submit', class: 'primary' }, 'Upload');
  const form = h(
    'form',
    { class: 'card', 'aria-labelledby': 'upload-h' },
    h('h2', { id: 'upload-h' }, 'Upload a model version'),
    h('div', { class: 'grid' }, field('Model name', nameIn), field('MLflow model directory as .tar.gz', file, 'tar -czf model.tar.gz -C DIR . (an MLmodel file at the top)')),
    out,
    h('div', { class: 'actions' }, send),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const f = file.files?.[0];
    if (!nameIn.value.trim() || !f) {
      clear(out, h('p', { class: 'error', role: 'alert' }, 'Give a model name and pick a .tar.gz file.'));
      return;
    }
    send.disabled = true;
    clear(out, h('p', { role: 'status' }, `Uploading ${formatBytes(f.size)}…`));
    try {
      const r = await call<{ version: string }>('POST', `/api/2.0/gantry/models/${enc(nameIn.value.trim())}/versions`, { raw: f, contentType: 'application/gzip' });
      clear(out, h('p', { role: 'status', class: 'ok' }, `Uploaded ${nameIn.value.trim()} version ${r.version}.`));
      form.reset();
      await load();
    } catch (e) {
      clear(out, errorBox(e));
    } finally {
      send.disabled = false;
    }
  });
  clear(main, h('h1', null, 'Models'), list, form);

  async function load(): Promise<void> {
    try {
      const r = await call<{ models: ModelVersion[] }>('GET', '/api/2.0/gantry/models');
      if (gone) return;
      const ms = (r.models ?? []).slice().sort((a, b) => a.name.localeCompare(b.name) || Number(b.version) - Number(a.version));
      clear(
        list,
        ms.length
          ? h(
              'table',
              { class: 'list', 'aria-label': 'Registered model versions' },
              h('thead', null, h('tr', null, ['Model', 'Version', 'Flavors', 'Signature inputs', 'Outputs', 'Size', 'Registered'].map((c) => h('th', { scope: 'col' }, c)))),
              h(
                'tbody',
                null,
                ms.map((m) =>
                  h(
                    'tr',
                    null,
                    h('th', { scope: 'row' }, m.name),
                    h('td', { class: 'num' }, m.version),
                    h('td', null, m.flavors.join(', ')),
                    h('td', null, sig(m.signature?.inputs)),
                    h('td', null, sig(m.signature?.outputs)),
                    h('td', { class: 'num' }, formatBytes(m.size_bytes)),
                    h('td', null, formatTime(m.creation_timestamp)),
                  ),
                ),
              ),
            )
          : h('p', { class: 'empty' }, 'No models yet: upload one below.'),
      );
    } catch (e) {
      if (!gone) clear(list, errorBox(e));
    }
  }
  void load();
  return () => {
    gone = true;
  };
}

function sig(cols?: { name?: string; type: string }[]): HTMLElement | string {
  if (!cols?.length) return '—';
  const text = cols.map((c) => `${c.name ?? ''}${c.name ? ': ' : ''}${c.type}`).join(', ');
  return cols.length > 4 ? h('details', null, h('summary', null, `${cols.length} columns`), text) : text;
}
