// The console: a login, a shell (navigation, search, language, logout)
// and one page per route (#/file/HASH, #/feed, #/fleet, #/host/ID,
// #/hunts, #/hunt/ID, #/health, #/rules, #/iocs).

import { api, whenLoggedOut } from './api.js';
import { h, field, errorBox, isHash } from './dom.js';
import { t, load, saved, LANGS, lang, translateStatic } from './i18n.js';
import { filePage } from './pages/file.js';
import { feedPage } from './pages/feed.js';
import { fleetPage, hostPage } from './pages/fleet.js';
import { huntsPage, huntPage } from './pages/hunts.js';
import { healthPage } from './pages/health.js';
import { rulesPage } from './pages/rules.js';
import { iocsPage } from './pages/iocs.js';

const ROUTES = {
  '': [homePage, 'nav.search'],
  file: [filePage, 'file.title'],
  feed: [feedPage, 'nav.feed'],
  fleet: [fleetPage, 'nav.fleet'],
  host: [hostPage, 'host.title'],
  hunts: [huntsPage, 'nav.hunts'],
  hunt: [huntPage, 'hunt.title'],
  health: [healthPage, 'nav.health'],
  rules: [rulesPage, 'nav.rules'],
  iocs: [iocsPage, 'nav.iocs'],
};

const NAV = [['feed', 'nav.feed'], ['fleet', 'nav.fleet'], ['hunts', 'nav.hunts'], ['health', 'nav.health'], ['rules', 'nav.rules'], ['iocs', 'nav.iocs']];

const ctx = { me: null, cleanup: null };
const main = () => document.getElementById('main');

function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const [pathPart, query = ''] = raw.split('?');
  const [name = '', ...rest] = pathPart.split('/');
  let arg = '';
  try { arg = decodeURIComponent(rest.join('/')); } catch (_) { arg = ''; }
  return { name, arg, params: new URLSearchParams(query) };
}

async function render() {
  if (ctx.cleanup) { try { ctx.cleanup(); } catch (_) { /* gone */ } ctx.cleanup = null; }
  const m = main();
  m.replaceChildren();
  m.setAttribute('aria-busy', 'true');
  if (!ctx.me) { loginPage(m); m.setAttribute('aria-busy', 'false'); return; }
  shell();
  const { name, arg, params } = route();
  const [page, title] = ROUTES[name] || ROUTES[''];
  document.title = `${t(title)} — Qala`;
  for (const a of document.querySelectorAll('#top nav a')) {
    if (a.getAttribute('href') === `#/${name}`) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  try {
    ctx.cleanup = (await page(m, arg, ctx, params)) || null;
  } catch (e) {
    m.append(errorBox(t('app.failed', { message: e.message || String(e) })));
  }
  m.setAttribute('aria-busy', 'false');
}

function shell() {
  const top = document.getElementById('top');
  if (top.dataset.lang === lang() && top.dataset.user === ctx.me.name) return;
  top.dataset.lang = lang();
  top.dataset.user = ctx.me.name;
  const search = h('input', { type: 'search', name: 'hash', placeholder: t('search.placeholder'), autocomplete: 'off', spellcheck: 'false', required: true });
  const form = h('form', { class: 'search', role: 'search', onsubmit: (e) => {
    e.preventDefault();
    const v = search.value.trim().toLowerCase();
    if (!isHash(v)) { search.setCustomValidity(t('search.invalid')); search.reportValidity(); return; }
    search.setCustomValidity('');
    location.hash = `#/file/${v}`;
  } }, h('label', { class: 'sr-only', for: 'q' }, t('search.label')), search, h('button', { type: 'submit' }, t('search.go')));
  search.id = 'q';
  search.addEventListener('input', () => search.setCustomValidity(''));
  const select = h('select', { onchange: async (e) => { await load(e.target.value); translateStatic(document); top.dataset.lang = ''; render(); } },
    LANGS.map(([code, key]) => h('option', { value: code, selected: code === lang() }, t(key))));
  const logout = h('button', { type: 'button', class: 'quiet', onclick: async () => {
    try { await api('DELETE', '/v1/session'); } catch (_) { /* gone already */ }
    ctx.me = null;
    top.replaceChildren();
    top.dataset.user = '';
    location.hash = '#/';
    render();
  } }, t('shell.logout'));
  top.replaceChildren(
    h('a', { class: 'brand', href: '#/' }, 'Qala'),
    h('nav', { 'aria-label': t('nav.label') }, h('ul', {}, NAV.map(([r, k]) => h('li', {}, h('a', { href: `#/${r}` }, t(k)))))),
    form,
    h('div', { class: 'who' },
      h('span', { class: 'user' }, t('shell.signed_in', { name: ctx.me.name, role: t(ctx.me.role === 'admin' ? 'role.admin' : 'role.analyst') })),
      field(t('shell.language'), select), logout),
  );
}

function homePage(m) {
  m.append(h('h1', {}, t('home.title')), h('p', {}, t('home.intro')));
  const input = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', class: 'wide' });
  m.append(h('form', { onsubmit: (e) => {
    e.preventDefault();
    const v = input.value.trim().toLowerCase();
    if (isHash(v)) location.hash = `#/file/${v}`; else { input.setCustomValidity(t('search.invalid')); input.reportValidity(); }
  } }, field(t('search.label'), input), h('button', { type: 'submit' }, t('search.go'))));
  input.addEventListener('input', () => input.setCustomValidity(''));
  m.append(h('ul', { class: 'tiles' }, NAV.map(([r, k]) => h('li', {}, h('a', { href: `#/${r}` }, t(k))))));
}

function loginPage(m) {
  document.title = `${t('login.title')} — Qala`;
  document.getElementById('top').replaceChildren(h('span', { class: 'brand' }, 'Qala'));
  const token = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, spellcheck: 'false' });
  const status = h('div', { role: 'status', 'aria-live': 'assertive' });
  const select = h('select', { onchange: async (e) => { await load(e.target.value); translateStatic(document); render(); } },
    LANGS.map(([code, key]) => h('option', { value: code, selected: code === lang() }, t(key))));
  const form = h('form', { class: 'login', onsubmit: async (e) => {
    e.preventDefault();
    status.replaceChildren();
    try {
      await api('POST', '/v1/session', { token: token.value.trim() });
      token.value = '';
      ctx.me = await api('GET', '/v1/session');
      render();
    } catch (err) {
      const why = err.status === 401 ? t('login.unknown') : err.status === 403 ? t('login.role') : t('login.failed', { message: err.message });
      status.replaceChildren(errorBox(why));
      token.focus();
    }
  } },
  h('h1', {}, t('login.title')),
  h('p', {}, t('login.intro')),
  field(t('login.token'), token),
  h('button', { type: 'submit' }, t('login.submit')),
  status,
  field(t('shell.language'), select));
  m.append(form);
  token.focus();
}

async function start() {
  await load(saved());
  translateStatic(document);
  whenLoggedOut(() => { if (ctx.me) { ctx.me = null; render(); } });
  try {
    const me = await api('GET', '/v1/session');
    ctx.me = me.role === 'admin' || me.role === 'analyst' ? me : null;
  } catch (_) {
    ctx.me = null;
  }
  // The skip link moves the focus; it is not a route.
  document.querySelector('.skip').addEventListener('click', (e) => { e.preventDefault(); main().focus(); });
  window.addEventListener('hashchange', () => { if (location.hash.startsWith('#/') || location.hash === '') render(); });
  await render();
}

start();
