// The fleet: every agent with its version, OS, last check-in, the
// detections it holds and its actions; and one host's page.

import { api } from '../api.js';
import { h, link, table, facts, badge, fmtTime, ago, fmtNum, fileLink } from '../dom.js';
import { t } from '../i18n.js';

export async function fleetPage(m) {
  m.append(h('h1', {}, t('nav.fleet')));
  const r = await api('GET', '/v1/agents');
  const filter = h('input', { type: 'search', autocomplete: 'off', 'aria-label': t('fleet.filter') });
  m.append(h('p', {}, t('fleet.count', { n: r.agents.length })), h('div', { class: 'field' }, filter));
  filter.placeholder = t('fleet.filter');
  const rows = r.agents.map((a) => h('tr', { 'data-agent': a.agent_id }, [
    link(['host', a.agent_id], a.hostname || a.agent_id),
    h('code', {}, a.agent_id),
    a.os, a.version,
    h('span', { title: fmtTime(a.last_checkin_ms) }, ago(a.last_checkin_ms)),
    a.detections === null || a.detections === undefined ? '—' : (a.detections ? h('strong', { class: 'warn' }, fmtNum(a.detections)) : '0'),
    fmtNum(a.actions),
    a.last_action_ms ? fmtTime(a.last_action_ms) : '—',
  ].map((c) => h('td', {}, c))));
  const tbl = table(null, [t('fleet.host'), t('fleet.agent'), t('fleet.os'), t('fleet.version'), t('fleet.checkin'), t('fleet.detections'), t('fleet.actions'), t('fleet.last_action')], rows, t('fleet.none'));
  m.append(tbl);
  filter.addEventListener('input', () => {
    const f = filter.value.toLowerCase();
    for (const row of rows) row.hidden = f && !row.textContent.toLowerCase().includes(f);
  });
}

export async function hostPage(m, id) {
  const a = await api('GET', `/v1/agents/${encodeURIComponent(id)}`);
  m.append(h('h1', {}, t('host.title'), ' ', h('span', { class: 'host' }, a.hostname || a.agent_id)));
  m.append(facts([
    [t('fleet.agent'), h('code', {}, a.agent_id)],
    [t('fleet.host'), a.hostname],
    [t('fleet.os'), a.os],
    [t('fleet.version'), a.version],
    [t('host.enrolled'), fmtTime(a.enrolled_ms)],
    [t('fleet.checkin'), `${fmtTime(a.last_checkin_ms)} (${ago(a.last_checkin_ms)})`],
    [t('fleet.actions'), fmtNum(a.actions)],
    [t('host.sightings'), `${fmtNum(a.sightings)}${a.truncated ? ' ' + t('host.truncated') : ''}`],
  ]));
  m.append(h('h2', {}, t('host.detections')), table(null, [t('file.sha256'), t('feed.verdict'), t('feed.rules'), t('file.first_seen'), t('file.last_seen')],
    a.detections.map((d) => [fileLink(d.sha256), badge(d.verdict), d.rules.join(', '), fmtTime(d.first_seen_ms), fmtTime(d.last_seen_ms)]), t('host.clean')));
  m.append(h('p', {}, link(['feed'], t('host.feed_link'))));
  const feedLink = m.lastElementChild.firstElementChild;
  feedLink.setAttribute('href', `#/feed?agent=${encodeURIComponent(a.agent_id)}`);
}
