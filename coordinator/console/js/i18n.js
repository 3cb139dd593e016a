// One string catalog per language (i18n/en.json, i18n/az.json); every
// string the console shows comes from one. English fills any gap.

let en = {};
let cat = {};
let current = 'en';

export const LANGS = [['en', 'lang.en'], ['az', 'lang.az']];

async function fetchCatalog(l) {
  const r = await fetch(`/console/i18n/${l}.json`, { credentials: 'same-origin' });
  if (!r.ok) throw new Error(`catalog ${l}: ${r.status}`);
  return r.json();
}

export async function load(l) {
  const want = LANGS.some(([code]) => code === l) ? l : 'en';
  if (!Object.keys(en).length) en = await fetchCatalog('en');
  cat = want === 'en' ? en : await fetchCatalog(want);
  current = want;
  document.documentElement.lang = want;
  try { localStorage.setItem('qala.lang', want); } catch (_) { /* private mode */ }
}

export function saved() {
  try { return localStorage.getItem('qala.lang') || 'en'; } catch (_) { return 'en'; }
}

export function lang() {
  return current;
}

// The string `key`, with {name} replaced by vars.name (as text).
export function t(key, vars) {
  let s = cat[key] ?? en[key] ?? key;
  if (vars) for (const [k, v] of Object.entries(vars)) s = s.split(`{${k}}`).join(String(v));
  return s;
}

// Elements of the page itself marked with a data-t attribute.
export function translateStatic(root) {
  for (const el of root.querySelectorAll('[data-t]')) el.textContent = t(el.getAttribute('data-t'));
}
