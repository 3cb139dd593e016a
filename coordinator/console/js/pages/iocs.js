// Hash IOC lists: counts per list, the entries a page at a time, and for
// admins add, remove and import a file (one digest per line with an
// optional name, or CSV).

import { api } from '../api.js';
import { h, table, field, errorBox, fmtTime, fmtNum, link, isHash } from '../dom.js';
import { t } from '../i18n.js';

const LISTS = [['block', 'ioc.block'], ['allow', 'ioc.allow']];
const listLabel = (l) => t(l === 'allow' ? 'ioc.allow' : 'ioc.block');

export async function iocsPage(m, _arg, ctx, params) {
  m.append(h('h1', {}, t('nav.iocs')));
  const admin = ctx.me.role === 'admin';
  const status = h('div', { role: 'status', 'aria-live': 'polite' });
  const box = h('div', {});
  const after = params.get('after') || '';
  if (admin) m.append(addForm(status), importForm(status));
  m.append(status, box);
  const refresh = async () => {
    const r = await api('GET', `/v1/iocs?limit=200${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    box.replaceChildren(...[
      h('p', { class: 'counts' }, t('ioc.counts', { block: fmtNum(r.block), allow: fmtNum(r.allow) })),
      table(null, [t('ioc.list'), t('ioc.kind'), t('ioc.digest'), t('ioc.name'), t('ioc.added'), t('ioc.source'), admin ? t('ioc.remove') : null].filter(Boolean),
        r.entries.map((e) => h('tr', { 'data-digest': e.digest }, [
          listLabel(e.list), e.kind, isHash(e.digest) ? link(['file', e.digest], h('code', {}, e.digest)) : e.digest, h('span', { translate: 'no' }, e.name || '—'), fmtTime(e.added_ms), h('span', { translate: 'no' }, e.source || '—'),
          admin ? h('button', { type: 'button', class: 'quiet', 'aria-label': t('ioc.remove_one', { digest: e.digest }), onclick: async () => {
            try {
              await api('DELETE', `/v1/iocs/${encodeURIComponent(e.list)}/${encodeURIComponent(e.kind)}/${encodeURIComponent(e.digest)}`);
              status.replaceChildren(h('p', { class: 'ok' }, t('ioc.removed')));
              await refresh();
            } catch (err) { status.replaceChildren(errorBox(err.message)); }
          } }, t('ioc.remove')) : null,
        ].filter((c) => c !== null).map((c) => h('td', {}, c)))), t('ioc.none')),
      r.next ? h('p', {}, h('a', { href: `#/iocs?after=${encodeURIComponent(r.next)}` }, t('ioc.next'))) : null,
    ].filter(Boolean));
  };
  m.addEventListener('qala-iocs-changed', () => refresh().catch(() => {}));
  await refresh();
}

function listSelect() {
  return h('select', {}, LISTS.map(([v, k]) => h('option', { value: v }, t(k))));
}

function changed(el) {
  el.closest('main').dispatchEvent(new Event('qala-iocs-changed'));
}

function addForm(status) {
  const list = listSelect();
  const digest = h('input', { type: 'text', required: true, autocomplete: 'off', spellcheck: 'false', class: 'wide' });
  const name = h('input', { type: 'text', maxlength: 200, autocomplete: 'off' });
  const form = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    try {
      const r = await api('POST', '/v1/iocs', { list: list.value, entries: [{ digest: digest.value.trim().toLowerCase(), name: name.value }] });
      status.replaceChildren(h('p', { class: 'ok' }, t('ioc.added_n', { n: r.added })));
      digest.value = '';
      changed(form);
    } catch (err) { status.replaceChildren(errorBox(err.message)); }
  } }, h('h2', {}, t('ioc.add')), field(t('ioc.list'), list), field(t('ioc.digest'), digest), field(t('ioc.name'), name), h('button', { type: 'submit' }, t('ioc.add_button')));
  return form;
}

function importForm(status) {
  const list = listSelect();
  const file = h('input', { type: 'file', required: true, accept: '.txt,.csv,text/plain,text/csv' });
  const form = h('form', { class: 'row', onsubmit: async (e) => {
    e.preventDefault();
    const f = file.files[0];
    if (!f) return;
    if (f.size > 1900000) { status.replaceChildren(errorBox(t('ioc.too_big'))); return; }
    try {
      const r = await api('POST', '/v1/iocs', { list: list.value, text: await f.text() });
      status.replaceChildren(h('p', { class: 'ok' }, t('ioc.added_n', { n: r.added })));
      changed(form);
    } catch (err) { status.replaceChildren(errorBox(err.message)); }
  } }, h('h2', {}, t('ioc.import')), field(t('ioc.list'), list), field(t('ioc.file'), file), h('button', { type: 'submit' }, t('ioc.import_button')));
  return form;
}
