// Building the page from data: everything an attacker may have written
// (member names, rule meta, mail subjects, host names) becomes text, never
// markup, with control, bidi and invisible characters shown as their code
// point. No string is ever parsed as HTML (the page's Trusted Types policy
// makes innerHTML throw).

import { t, lang } from './i18n.js';

// C0/C1 controls, soft hyphen, Arabic letter mark, bidi marks, embeddings,
// overrides and isolates, zero-width characters, line/paragraph
// separators, word joiners, BOM, interlinear annotation.
const HIDDEN = /[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\ufff9-\ufffb]/u;

// `s` as text, each hidden character a visible mark.
export function shown(s) {
  const f = document.createDocumentFragment();
  let run = '';
  for (const ch of String(s ?? '')) {
    if (HIDDEN.test(ch)) {
      if (run) { f.append(document.createTextNode(run)); run = ''; }
      const code = 'U+' + ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0');
      const mark = document.createElement('span');
      mark.className = 'ctl';
      mark.textContent = code;
      mark.title = t('dom.hidden_char', { code });
      f.append(mark);
    } else {
      run += ch;
    }
  }
  if (run) f.append(document.createTextNode(run));
  return f;
}

// A multi-line text (a compiler's report): each line shown, the line
// breaks kept (inside <pre>).
export function lines(s) {
  const f = document.createDocumentFragment();
  String(s ?? '').split('\n').forEach((line, i) => {
    if (i) f.append(document.createTextNode('\n'));
    f.append(shown(line));
  });
  return f;
}

// An element: attributes (`on...` are listeners, `text` is shown text),
// then children (nodes, or strings shown as text).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'href') el.setAttribute('href', safeHref(v));
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : shown(String(c)));
  }
  return el;
}

// Only the console's own routes are links.
function safeHref(v) {
  const s = String(v);
  return s.startsWith('#/') || s === '#main' ? s : '#/';
}

// A link to a console route; the parts are encoded.
export function link(parts, ...children) {
  return h('a', { href: '#/' + parts.map((p) => encodeURIComponent(String(p))).join('/') }, ...children);
}

export function fileLink(sha) {
  return link(['file', sha], h('code', {}, sha));
}

export function table(caption, headers, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty ?? t('dom.none'));
  return h('div', { class: 'scroll' }, h('table', {},
    caption ? h('caption', {}, caption) : null,
    h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
    h('tbody', {}, rows.map((r) => (r instanceof Node ? r : h('tr', {}, r.map((c) => h('td', {}, c))))))));
}

// A definition list of [term, value] pairs (values null are left out).
export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter((p) => p[1] !== null && p[1] !== undefined && p[1] !== '')
    .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

export function section(title, ...children) {
  return h('section', {}, h('h2', {}, title), ...children);
}

const LEVELS = {
  clean: 'level.clean',
  suspicious: 'level.suspicious',
  malicious: 'level.malicious',
  unscannable: 'level.unscannable',
  unknown: 'level.unknown',
};

export function badge(level) {
  const known = Object.hasOwn(LEVELS, level) ? level : 'unknown';
  return h('span', { class: `badge ${known}` }, t(LEVELS[known]));
}

export function errorBox(message) {
  return h('div', { class: 'error', role: 'alert' }, message);
}

export function fmtTime(ms) {
  if (!ms) return '—';
  return new Date(ms).toLocaleString(lang() === 'az' ? 'az-Latn-AZ' : 'en-GB', { hour12: false });
}

export function ago(ms) {
  if (!ms) return '—';
  const s = Math.round((ms - Date.now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(lang() === 'az' ? 'az' : 'en', { numeric: 'auto' });
  const a = Math.abs(s);
  if (a < 60) return rtf.format(s, 'second');
  if (a < 3600) return rtf.format(Math.round(s / 60), 'minute');
  if (a < 86400) return rtf.format(Math.round(s / 3600), 'hour');
  return rtf.format(Math.round(s / 86400), 'day');
}

export function fmtBytes(n) {
  const units = ['unit.b', 'unit.kib', 'unit.mib', 'unit.gib', 'unit.tib'];
  let v = Number(n) || 0;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i ? v.toFixed(1) : v} ${t(units[i])}`;
}

export function fmtNum(n, digits = 0) {
  return Number(n || 0).toLocaleString(lang() === 'az' ? 'az-Latn-AZ' : 'en-GB', { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function yesNo(b) {
  return b ? t('dom.yes') : t('dom.no');
}

// A labelled form field.
export function field(label, input) {
  const id = 'f' + Math.random().toString(36).slice(2, 9);
  input.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input);
}

export function isHash(s) {
  return /^([0-9a-f]{32}|[0-9a-f]{40}|[0-9a-f]{64})$/.test(s);
}
