// The detections feed, live: server-sent events from the store (so
// detections stored through any coordinator show), filtered by rule,
// technique, verdict level and agent. A row opens the file's page.

import { h, field, badge, fmtTime, fmtBytes, link } from '../dom.js';
import { t } from '../i18n.js';

const MAX_ROWS = 500;

export function feedPage(m, _arg, _ctx, params) {
  m.append(h('h1', {}, t('nav.feed')));
  const inputs = {
    rule: h('input', { type: 'text', value: params.get('rule') || '', autocomplete: 'off' }),
    technique: h('input', { type: 'text', value: params.get('technique') || '', placeholder: 'T1059', autocomplete: 'off' }),
    level: h('select', {}, [['', 'feed.any'], ['suspicious', 'feed.suspicious_up'], ['malicious', 'level.malicious']]
      .map(([v, k]) => h('option', { value: v, selected: (params.get('level') || '') === v }, t(k)))),
    agent: h('input', { type: 'text', value: params.get('agent') || '', autocomplete: 'off' }),
  };
  const apply = (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, el] of Object.entries(inputs)) if (el.value.trim()) p.set(k, el.value.trim());
    if (params.get('since')) p.set('since', params.get('since'));
    location.hash = `#/feed?${p}`;
  };
  m.append(h('form', { class: 'filters', onsubmit: apply },
    field(t('feed.rule'), inputs.rule), field(t('feed.technique'), inputs.technique),
    field(t('feed.level'), inputs.level), field(t('feed.agent'), inputs.agent),
    h('button', { type: 'submit' }, t('feed.apply'))));
  const status = h('p', { class: 'live', role: 'status', 'aria-live': 'polite' }, t('feed.connecting'));
  const body = h('tbody', {});
  const tbl = h('div', { class: 'scroll' }, h('table', { class: 'feed' },
    h('thead', {}, h('tr', {}, [t('feed.time'), t('feed.verdict'), t('feed.rules'), t('feed.techniques'), t('file.sha256'), t('file.size'), t('file.type')].map((x) => h('th', { scope: 'col' }, x)))),
    body));
  m.append(status, tbl);
  let shown = 0;
  const q = new URLSearchParams();
  for (const k of ['rule', 'technique', 'level', 'agent', 'since']) if (params.get(k)) q.set(k, params.get(k));
  if (params.get('since')) m.insertBefore(h('p', { class: 'note' }, t('feed.since', { when: fmtTime(Number(params.get('since'))) })), status);
  const source = new EventSource(`/v1/detections/stream?${q}`);
  source.addEventListener('open', () => { status.textContent = t('feed.live', { n: shown }); });
  source.addEventListener('detection', (ev) => {
    let e;
    try { e = JSON.parse(ev.data); } catch (_) { return; }
    const rules = e.detections.map((d) => d.rule);
    const techniques = [...new Set(e.detections.flatMap((d) => d.techniques))];
    const row = h('tr', { class: 'click', tabindex: 0, 'data-sha256': e.sha256, 'data-at': e.at_ms,
      onclick: () => { location.hash = `#/file/${e.sha256}`; },
      onkeydown: (k) => { if (k.key === 'Enter') location.hash = `#/file/${e.sha256}`; } },
    [fmtTime(e.at_ms), badge(e.verdict), rules.join(', '), techniques.join(', '), link(['file', e.sha256], h('code', {}, e.sha256.slice(0, 16) + '…')), fmtBytes(e.size), e.file_type]
      .map((c) => h('td', {}, c)));
    body.prepend(row);
    shown += 1;
    while (body.children.length > MAX_ROWS) body.lastElementChild.remove();
    status.textContent = t('feed.live', { n: shown });
  });
  source.addEventListener('problem', (ev) => {
    let p = {};
    try { p = JSON.parse(ev.data); } catch (_) { /* shown as is */ }
    status.textContent = t('feed.problem', { message: p.message || ev.data });
  });
  source.addEventListener('error', () => {
    status.textContent = source.readyState === EventSource.CLOSED ? t('feed.closed') : t('feed.reconnecting');
  });
  return () => source.close();
}
