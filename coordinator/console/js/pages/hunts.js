// Hunts: start one (admins), watch its progress, see what changed (and,
// for a what-if hunt, what its rules matched).

import { api } from '../api.js';
import { h, link, table, facts, field, errorBox, fmtTime, fmtNum, fmtBytes, fileLink, badge } from '../dom.js';
import { t } from '../i18n.js';

const STATES = { queued: 'hunt.queued', running: 'hunt.running', done: 'hunt.done', cancelled: 'hunt.cancelled', 'dry run': 'hunt.dry_run' };
const stateLabel = (s) => (Object.hasOwn(STATES, s) ? t(STATES[s]) : s);

function progress(x) {
  const total = Math.max(x.in_scope, 1);
  const done = x.rescanned + x.judged_meanwhile + x.no_holder_online + x.declined + x.unanswered;
  return h('span', { class: 'progress' }, h('progress', { max: total, value: Math.min(done, total), 'aria-label': t('hunt.progress') }),
    ' ', t('hunt.done_of', { done: fmtNum(done), total: fmtNum(x.in_scope) }));
}

export async function huntsPage(m, _arg, ctx) {
  m.append(h('h1', {}, t('nav.hunts')));
  if (ctx.me.role === 'admin') m.append(startForm());
  const list = h('div', {});
  m.append(h('h2', {}, t('hunt.list')), list);
  const refresh = async () => {
    const r = await api('GET', '/v1/hunts');
    list.replaceChildren(table(null, [t('hunt.id'), t('hunt.state'), t('hunt.started_by'), t('hunt.created'), t('hunt.progress'), t('hunt.changed'), t('hunt.asked'), t('hunt.matched')],
      r.hunts.map((x) => h('tr', { 'data-hunt': x.id }, [link(['hunt', x.id], h('code', {}, x.id)), stateLabel(x.state), h('span', { translate: 'no' }, x.started_by), fmtTime(x.created_ms), progress(x),
        fmtNum(x.changed), fmtNum(x.asked), x.what_if ? fmtNum(x.matched) : '—'].map((c) => h('td', {}, c)))), t('hunt.none')));
  };
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 3000);
  return () => clearInterval(timer);
}

function startForm() {
  const since = h('input', { type: 'number', min: 1, max: 3650, value: 30 });
  const types = h('input', { type: 'text', placeholder: 'pe, zip', autocomplete: 'off' });
  const maxSize = h('input', { type: 'number', min: 0, value: 0 });
  const rate = h('input', { type: 'number', min: 0.1, step: 0.1, value: 5 });
  const dry = h('input', { type: 'checkbox' });
  const rules = h('input', { type: 'file', accept: '.yar,.yara,text/plain', multiple: true });
  const status = h('div', { role: 'status', 'aria-live': 'polite' });
  return h('form', { class: 'start', onsubmit: async (e) => {
    e.preventDefault();
    status.replaceChildren();
    try {
      const files = await Promise.all([...rules.files].map(async (f) => ({ name: f.name, text: await f.text() })));
      const body = {
        since_ms: Date.now() - Number(since.value) * 86400000,
        types: types.value.split(',').map((x) => x.trim()).filter(Boolean),
        max_size: Number(maxSize.value) || 0,
        rate: Number(rate.value) || 0,
        dry_run: dry.checked,
        rules: files,
      };
      const x = await api('POST', '/v1/hunts', body);
      if (x.state === 'dry run') {
        // A count only: nothing is kept, so it is shown here.
        status.replaceChildren(h('div', { class: 'ok' }, facts([
          [t('hunt.state'), stateLabel(x.state)],
          [t('hunt.scope'), t('hunt.scope_value', { n: fmtNum(x.in_scope), bytes: fmtBytes(x.bytes_in_scope) })],
        ])));
        return;
      }
      location.hash = `#/hunt/${x.id}`;
    } catch (err) {
      status.replaceChildren(errorBox(err.message));
    }
  } },
  h('h2', {}, t('hunt.start')),
  h('div', { class: 'row' }, field(t('hunt.since_days'), since), field(t('hunt.types'), types), field(t('hunt.max_size'), maxSize), field(t('hunt.rate'), rate)),
  h('div', { class: 'row' }, field(t('hunt.dry'), dry), field(t('hunt.what_if_rules'), rules)),
  h('button', { type: 'submit' }, t('hunt.start_button')), status);
}

export async function huntPage(m, id, ctx) {
  const box = h('div', {});
  m.append(h('h1', {}, t('hunt.title'), ' ', h('code', {}, id)), box);
  const refresh = async () => {
    const x = await api('GET', `/v1/hunts/${encodeURIComponent(id)}`);
    const parts = [
      facts([
        [t('hunt.state'), stateLabel(x.state)],
        [t('hunt.progress'), progress(x)],
        [t('hunt.started_by'), h('span', { translate: 'no' }, x.started_by)],
        [t('hunt.created'), fmtTime(x.created_ms)],
        [t('hunt.finished'), x.finished_ms ? fmtTime(x.finished_ms) : null],
        [t('hunt.ruleset'), h('code', {}, x.ruleset_id)],
        [t('hunt.scope'), t('hunt.scope_value', { n: fmtNum(x.in_scope), bytes: fmtBytes(x.bytes_in_scope) })],
        [t('hunt.rescanned'), fmtNum(x.rescanned)],
        [t('hunt.changed'), fmtNum(x.changed)],
        [t('hunt.asked'), fmtNum(x.asked)],
        [t('hunt.meanwhile'), fmtNum(x.judged_meanwhile)],
        [t('hunt.offline'), fmtNum(x.no_holder_online)],
        [t('hunt.declined'), fmtNum(x.declined)],
        [t('hunt.unanswered'), fmtNum(x.unanswered)],
        [t('hunt.what_if'), x.what_if ? t('hunt.what_if_yes', { n: x.what_if_rules }) : t('dom.no')],
      ]),
    ];
    // Verdicts a hunt changed into detections are stored as new
    // detections: the feed since it began shows them.
    if (!x.what_if && x.started_ms) {
      const a = h('a', { href: '#/feed' }, t('hunt.see_changes'));
      a.setAttribute('href', `#/feed?since=${x.started_ms}`);
      parts.push(h('p', {}, a));
    }
    if (x.what_if) {
      const mm = await api('GET', `/v1/hunts/${encodeURIComponent(id)}/matches`);
      parts.push(h('h2', {}, t('hunt.matches')), table(null, [t('file.sha256'), t('feed.verdict'), t('feed.rules'), t('file.size'), t('feed.time')],
        mm.matches.map((x2) => [fileLink(x2.sha256), badge(x2.verdict), x2.rules.join(', '), fmtBytes(x2.size), fmtTime(x2.at_ms)]), t('hunt.no_matches')));
    }
    if (ctx.me.role === 'admin' && (x.state === 'queued' || x.state === 'running')) {
      parts.push(h('button', { type: 'button', class: 'danger', onclick: async () => { await api('DELETE', `/v1/hunts/${encodeURIComponent(id)}`); refresh(); } }, t('hunt.cancel')));
    }
    box.replaceChildren(...parts);
    return x.state === 'queued' || x.state === 'running';
  };
  let live = await refresh();
  const timer = setInterval(async () => { if (live) live = await refresh().catch(() => false); }, 2000);
  return () => clearInterval(timer);
}
