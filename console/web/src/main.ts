// The console: a hash router over a few pages. Hash routes keep the server
// side to two static paths (/ and /assets/), and nothing secret is ever in
// the URL: the token lives in sessionStorage (api.ts).

import './style.css';
import { ApiError, call, getToken, setToken } from './api';
import { clear, field, h } from './dom';
import { endpointsPage } from './pages/endpoints';
import { endpointPage } from './pages/endpoint';
import { editPage } from './pages/edit';
import { modelsPage } from './pages/models';

/** A page renders into main; the function it returns runs when the user
 * leaves it (to stop timers and subscriptions). */
export type Page = (main: HTMLElement, params: string[]) => (() => void) | void;

const routes: [RegExp, Page, string][] = [
  [/^\/?$/, endpointsPage, 'endpoints'],
  [/^\/endpoints\/?$/, endpointsPage, 'endpoints'],
  [/^\/create$/, (m) => editPage(m, null), 'endpoints'],
  [/^\/endpoints\/([^/]+)\/edit$/, (m, p) => editPage(m, p[0]), 'endpoints'],
  [/^\/endpoints\/([^/]+)$/, endpointPage, 'endpoints'],
  [/^\/models$/, modelsPage, 'models'],
  [/^\/sign-in$/, signInPage, ''],
];

const main = document.getElementById('main')!;
let leave: (() => void) | void;
let afterSignIn = '#/';
let rendered = false;

function render(): void {
  if (leave) leave();
  leave = undefined;
  const path = decodeURI(location.hash.replace(/^#/, '')) || '/';
  renderSession();
  for (const [re, page, nav] of routes) {
    const m = re.exec(path);
    if (!m) continue;
    for (const a of document.querySelectorAll<HTMLAnchorElement>('[data-nav]')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    clear(main);
    leave = page(main, m.slice(1).map(decodeURIComponent));
    // After a navigation, move focus to the new page's heading so that
    // screen readers announce it; on the first load the browser starts at
    // the top, with the skip link.
    const h1 = main.querySelector('h1');
    if (h1 && rendered) {
      h1.tabIndex = -1;
      h1.focus({ preventScroll: true });
    }
    rendered = true;
    return;
  }
  clear(main, h('h1', null, 'Not found'), h('p', null, 'No console page at ', h('code', null, path), '. ', h('a', { href: '#/' }, 'Endpoints')));
}

function renderSession(): void {
  const el = document.getElementById('session')!;
  if (getToken()) {
    clear(
      el,
      h('span', null, 'Signed in with a token'),
      h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'),
    );
  } else {
    clear(el, h('a', { href: '#/sign-in' }, 'Sign in'));
  }
}

function signOut(): void {
  setToken(null);
  location.hash = '#/sign-in';
  render();
}

function signInPage(m: HTMLElement): void {
  const token = h('input', { type: 'password', name: 'token', autocomplete: 'off', spellcheck: 'false', required: true });
  const error = h('p', { class: 'error', role: 'alert' });
  const form = h(
    'form',
    { class: 'card narrow', 'aria-labelledby': 'signin-title' },
    h('h1', { id: 'signin-title' }, 'Sign in to Gantry'),
    field('Access token', token, 'A personal access token. It stays in this browser tab only and is sent as a bearer token with each call. gantry dev writes the admin token to <data-dir>/admin-token.'),
    error,
    h('div', { class: 'actions' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in')),
  );
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    setToken(token.value.trim());
    try {
      await call('GET', '/api/2.0/serving-endpoints');
      location.hash = afterSignIn === '#/sign-in' ? '#/' : afterSignIn;
    } catch (e) {
      setToken(null);
      error.textContent = e instanceof ApiError ? `${e.message} (${e.code})` : String(e);
    }
  });
  clear(m, form);
}

// Any 401 asks for a token, and comes back to the page after sign-in.
window.addEventListener('gantry:unauthenticated', () => {
  if (location.hash === '#/sign-in') return;
  afterSignIn = location.hash || '#/';
  setToken(null);
  location.hash = '#/sign-in';
});

// The skip link's #main would be taken for a route: focus main instead.
document.querySelector('.skip')?.addEventListener('click', (ev) => {
  ev.preventDefault();
  main.focus();
});

window.addEventListener('hashchange', render);
render();
