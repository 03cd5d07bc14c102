import { ApiError, type Endpoint } from '../api';
import { h } from '../dom';

/** stateBadge shows an endpoint's two states as the CLI's --wait does. */
export function stateBadge(ep: Endpoint): HTMLElement {
  const cls = ep.state.config_update === 'UPDATE_FAILED' ? 'bad' : ep.state.ready === 'READY' ? (ep.state.config_update === 'IN_PROGRESS' ? 'busy' : 'good') : 'busy';
  return h(
    'span',
    { class: `badge ${cls}`, 'data-testid': 'state' },
    ep.state.ready,
    ep.state.config_update && ep.state.config_update !== 'NOT_UPDATING' ? ` · ${ep.state.config_update}` : '',
  );
}

export function deploymentBadge(state?: string): HTMLElement {
  const s = state ?? 'UNKNOWN';
  const cls = s === 'DEPLOYMENT_READY' ? 'good' : s === 'DEPLOYMENT_FAILED' || s === 'DEPLOYMENT_ABORTED' ? 'bad' : 'busy';
  return h('span', { class: `badge ${cls}` }, s.replace(/^DEPLOYMENT_/, ''));
}

/** errorBox shows a server's message as it came, with its code. */
export function errorBox(e: unknown): HTMLElement {
  const el = h('div', { class: 'error', role: 'alert' });
  if (e instanceof ApiError) {
    el.append(h('strong', null, `${e.status} ${e.code}`), ': ', e.message);
  } else {
    el.textContent = String(e);
  }
  return el;
}
