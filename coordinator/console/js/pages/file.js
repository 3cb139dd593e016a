// A file by sha256, sha1 or md5: its verdict, the detections placed in a
// tree of the submission (built from the objects' parent links), rule
// meta and ATT&CK techniques, the executable report, mail headers, limits,
// who holds it and what they did, and (admins) the IOC list buttons.

import { api } from '../api.js';
import { h, link, table, facts, section, badge, errorBox, fmtTime, fmtBytes, fmtNum, yesNo, isHash, field, ago } from '../dom.js';
import { t } from '../i18n.js';

// Text from the file or its rules, not the console's: never translated.
const data = (v) => h('span', { translate: 'no' }, v);

export async function filePage(m, hash, ctx) {
  const q = String(hash || '').trim().toLowerCase();
  m.append(h('h1', {}, t('file.title'), ' ', h('code', { class: 'hash' }, q)));
  if (!isHash(q)) { m.append(errorBox(t('file.bad_hash'))); return; }
  let found = null;
  try {
    found = await api('GET', `/v1/verdicts/${q}`);
  } catch (e) {
    if (e.status !== 404) throw e;
    m.append(h('p', { class: 'empty' }, t('file.unknown')));
  }
  const verdicts = found ? found.verdicts : [];
  if (verdicts.length > 1) m.append(h('p', {}, t('file.several', { n: verdicts.length })));
  for (const v of verdicts) m.append(verdictView(v));
  m.append(await holdersView(q));
  if (ctx.me.role === 'admin') m.append(adminView(verdicts.length ? verdicts[0].sha256 : q, verdicts));
}

function verdictView(v) {
  const art = h('article', { class: 'verdict', 'data-sha256': v.sha256 });
  art.append(h('h2', {}, badge(v.verdict), ' ', h('code', { class: 'hash' }, v.sha256)));
  art.append(facts([
    [t('file.sha256'), h('code', {}, v.sha256)],
    [t('file.sha1'), h('code', {}, v.sha1)],
    [t('file.md5'), h('code', {}, v.md5)],
    [t('file.size'), `${fmtBytes(v.size)} (${fmtNum(v.size)})`],
    [t('file.type'), v.file_type],
    [t('file.objects'), fmtNum(v.objects_scanned)],
    [t('file.scanned_at'), fmtTime(v.scanned_at_ms)],
    [t('file.duration'), `${fmtNum(v.scan_duration_us / 1000, 1)} ${t('unit.ms')}`],
    [t('file.ruleset'), h('code', {}, v.ruleset_id)],
    [t('file.engine'), v.engine_version],
    [t('file.partial'), v.partial ? t('file.partial_yes', { when: fmtTime(v.expires_at_ms) }) : t('dom.no')],
    [t('file.ioc'), v.ioc ? t('file.ioc_match', { list: v.ioc.list === 'allow' ? t('ioc.allow') : t('ioc.block'), name: v.ioc.name || '—', object: v.ioc.object || t('file.root') }) : null],
  ]));
  art.append(section(t('file.detections'), detectionsView(v.detections)));
  art.append(section(t('file.tree'), treeView(v)));
  if (v.limits_hit.length || v.errors.length || v.encrypted.length) {
    art.append(section(t('file.limits'),
      table(null, [t('file.limit'), t('file.object'), t('file.detail')], v.limits_hit.map((l) => [l.limit, l.object || t('file.root'), l.detail]), t('file.no_limits')),
      v.errors.length ? h('ul', { class: 'problems' }, v.errors.map((e) => h('li', {}, e))) : null,
      v.encrypted.length ? h('p', {}, t('file.encrypted'), ' ', v.encrypted.map((e, i) => [i ? ', ' : '', h('code', {}, e)])) : null));
  }
  if (v.executables.length) art.append(section(t('file.executables'), v.executables.map(exeView)));
  if (v.object_meta.length) art.append(section(t('file.mail'), v.object_meta.map(metaView)));
  return art;
}

function detectionsView(dets) {
  return table(null, [t('file.rule'), t('file.severity'), t('file.object'), t('file.techniques'), t('file.tags'), t('file.meta')],
    dets.map((d) => [
      h('span', { class: 'rule', translate: 'no' }, d.namespace ? `${d.namespace}.` : '', h('strong', {}, d.rule)),
      badge(d.severity),
      d.object ? h('code', { class: 'object' }, d.object) : t('file.root'),
      d.techniques.map((x, i) => [i ? ' ' : '', h('span', { class: 'tag technique' }, x)]),
      d.tags.map((x, i) => [i ? ' ' : '', h('span', { class: 'tag', translate: 'no' }, x)]),
      Object.keys(d.meta).length ? facts(Object.entries(d.meta).map(([k, v]) => [k, data(v)])) : '—',
    ]), t('file.no_detections'));
}

// The submission as a tree: each object under the object it came out of
// (`parent`: 1-based index into `objects`, 0 the file itself), named by
// its path below its parent's.
function treeView(v) {
  const kids = new Map();
  v.objects.forEach((o, i) => {
    const p = o.parent > 0 && o.parent <= i ? o.parent : 0;
    if (!kids.has(p)) kids.set(p, []);
    kids.get(p).push(i + 1);
  });
  const hits = (object) => v.detections.filter((d) => d.object === object);
  const placed = new Set();
  const node = (index, depth) => {
    const o = index === 0 ? { object: '', sha256: v.sha256 } : v.objects[index - 1];
    const parent = index === 0 ? null : (o.parent > 0 ? v.objects[o.parent - 1] : { object: '' });
    let name = o.object;
    if (parent && parent.object && name.startsWith(parent.object + '/')) name = name.slice(parent.object.length + 1);
    const found = hits(o.object);
    found.forEach((d) => placed.add(d));
    const label = h('span', { class: found.length ? 'node hit' : 'node' },
      index === 0 ? h('strong', {}, t('file.root')) : h('code', { class: 'object' }, name),
      ' ', index === 0 ? '' : link(['file', o.sha256], h('small', {}, o.sha256.slice(0, 12) + '…')),
      o.truncated ? [' ', h('span', { class: 'tag' }, t('file.truncated'))] : '',
      found.map((d) => [' ', badge(d.severity), ' ', h('span', { class: 'rule', translate: 'no' }, d.rule)]));
    const children = depth < 64 ? (kids.get(index) || []) : [];
    return h('li', { 'data-object': o.object }, label, children.length ? h('ul', {}, children.map((c) => node(c, depth + 1))) : null);
  };
  const tree = h('ul', { class: 'tree', 'aria-label': t('file.tree') }, node(0, 0));
  const rest = v.detections.filter((d) => !placed.has(d));
  const out = [tree];
  if (v.objects_truncated) out.push(h('p', { class: 'note' }, t('file.objects_truncated')));
  if (rest.length) out.push(h('p', { class: 'note' }, t('file.unplaced'), ' ', rest.map((d, i) => [i ? ', ' : '', h('code', {}, d.object), ' ', d.rule])));
  return out;
}

function exeView(x) {
  return h('div', { class: 'exe' },
    h('h3', {}, x.object ? h('code', { class: 'object' }, x.object) : t('file.root')),
    x.error ? errorBox(t('file.exe_error', { error: x.error })) : null,
    facts([
      [t('exe.format'), `${x.format} ${x.arch} ${x.is_64 ? '64' : '32'}`],
      [t('exe.entry'), `0x${x.entry_point.toString(16)} ${x.entry_section ? `(${x.entry_section})` : ''}`],
      [t('exe.imports'), fmtNum(x.imports)],
      [t('exe.exports'), fmtNum(x.exports)],
      [t('exe.resources'), fmtNum(x.resources)],
      [t('exe.overlay'), fmtBytes(x.overlay_size)],
      [t('exe.signed'), yesNo(x.signed)],
    ]),
    x.facts.length ? h('ul', { class: 'facts-list', 'aria-label': t('exe.facts') }, x.facts.map((f) => h('li', {}, h('code', {}, f)))) : null,
    table(t('exe.sections'), [t('exe.name'), t('exe.vaddr'), t('exe.vsize'), t('exe.rsize'), t('exe.entropy'), t('exe.flags')],
      x.sections.map((s) => [
        h('code', {}, s.name),
        `0x${s.virtual_address.toString(16)}`,
        fmtNum(s.virtual_size),
        fmtNum(s.raw_size),
        h('span', { class: 'entropy' }, h('meter', { min: 0, max: 8, high: 7.2, value: s.entropy, 'aria-label': t('exe.entropy') }), ' ', s.entropy.toFixed(2)),
        h('code', {}, s.flags),
      ])),
    x.import_names.length ? h('details', {}, h('summary', {}, t('exe.import_list', { n: x.import_names.length })),
      h('ul', { class: 'names' }, x.import_names.map((n) => h('li', {}, h('code', {}, n))))) : null,
    x.export_names.length ? h('details', {}, h('summary', {}, t('exe.export_list', { n: x.export_names.length })),
      h('ul', { class: 'names' }, x.export_names.map((n) => h('li', {}, h('code', {}, n))))) : null);
}

function metaView(m) {
  return h('div', { class: 'meta' },
    h('h3', {}, m.object ? h('code', { class: 'object' }, m.object) : t('file.root')),
    facts(Object.entries(m.meta).map(([k, v]) => [k, data(v)])));
}

async function holdersView(q) {
  const s = section(t('file.holders'));
  try {
    const r = await api('GET', `/v1/sightings/${q}`);
    s.append(table(null, [t('fleet.host'), t('fleet.agent'), t('file.first_seen'), t('file.last_seen'), t('file.holds'), t('file.action')],
      r.holders.map((x) => h('tr', { 'data-agent': x.agent_id }, [
        link(['host', x.agent_id], x.hostname || x.agent_id),
        h('code', {}, x.agent_id),
        fmtTime(x.first_seen_ms),
        fmtTime(x.last_seen_ms),
        yesNo(x.holds),
        x.action ? `${x.action} (${ago(x.action_ms)})` : '—',
      ].map((c) => h('td', {}, c)))), t('file.no_holders')));
  } catch (e) {
    s.append(errorBox(e.message));
  }
  return s;
}

function adminView(sha, verdicts) {
  const name = h('input', { type: 'text', maxlength: 200, value: verdicts.length && verdicts[0].detections.length ? verdicts[0].detections[0].rule : '' });
  const status = h('div', { role: 'status', 'aria-live': 'polite' });
  const add = (list) => async () => {
    status.replaceChildren();
    try {
      const r = await api('POST', '/v1/iocs', { list, entries: [{ digest: sha, name: name.value }] });
      status.replaceChildren(h('p', { class: 'ok' }, t('file.ioc_added', { n: r.added, list: list === 'allow' ? t('ioc.allow') : t('ioc.block') })));
    } catch (e) {
      status.replaceChildren(errorBox(e.message));
    }
  };
  return h('section', { class: 'admin' }, h('h2', {}, t('file.admin')),
    field(t('file.ioc_name'), name),
    h('div', { class: 'buttons' },
      h('button', { type: 'button', class: 'danger', 'data-action': 'block', onclick: add('block') }, t('file.block')),
      h('button', { type: 'button', 'data-action': 'allow', onclick: add('allow') }, t('file.allow'))),
    status);
}
