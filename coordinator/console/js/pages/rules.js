// The ruleset in force: files, compile warnings and the last failed
// reload's errors with file and line; a reload (admins).

import { api } from '../api.js';
import { h, table, facts, errorBox, fmtTime, fmtNum, fmtBytes, lines } from '../dom.js';
import { t } from '../i18n.js';

const diag = (list, empty) => table(null, [t('rules.file'), t('rules.line'), t('rules.message')],
  list.map((e) => h('tr', {}, [h('code', {}, e.path), e.line ? fmtNum(e.line) : '—', h('pre', { class: 'report', translate: 'no' }, lines(e.message))].map((c) => h('td', {}, c)))), empty);

export async function rulesPage(m, _arg, ctx) {
  m.append(h('h1', {}, t('nav.rules')));
  const box = h('div', {});
  const status = h('div', { role: 'status', 'aria-live': 'polite' });
  m.append(box);
  const refresh = async () => {
    const r = await api('GET', '/v1/rules');
    box.replaceChildren(...[
      facts([
        [t('rules.id'), h('code', {}, r.ruleset_id)],
        [t('rules.count'), fmtNum(r.rule_count)],
        [t('rules.files'), fmtNum(r.file_count)],
        [t('rules.loaded'), fmtTime(r.loaded_at_ms)],
        [t('rules.last_error'), r.last_error_at_ms ? fmtTime(r.last_error_at_ms) : null],
      ]),
      ctx.me.role === 'admin' ? h('div', { class: 'buttons' }, h('button', { type: 'button', onclick: async () => {
        status.replaceChildren(h('p', {}, t('rules.reloading')));
        try {
          const x = await api('POST', '/v1/rules/reload');
          status.replaceChildren(x.errors.length ? errorBox(t('rules.reload_failed', { n: x.errors.length }))
            : h('p', { class: 'ok' }, x.changed ? t('rules.reloaded', { id: x.ruleset_id }) : t('rules.unchanged')));
          await refresh();
        } catch (e) {
          status.replaceChildren(errorBox(e.message));
        }
      } }, t('rules.reload')), status) : null,
      h('h2', {}, t('rules.errors')),
      diag(r.last_errors, t('rules.no_errors')),
      h('h2', {}, t('rules.warnings', { n: r.warnings.length })),
      diag(r.warnings, t('rules.no_warnings')),
      h('h2', {}, t('rules.file_list')),
      table(null, [t('rules.file'), t('file.size')], r.files.map((f) => [h('code', {}, f.path), fmtBytes(f.bytes)]), t('rules.no_files')),
    ].filter(Boolean));
  };
  await refresh();
}
