// Cluster health: every worker with its slots, scans/s, MB/s, p99 and
// ruleset; the store; cache hits; and charts of the last hour as this
// coordinator sampled it (no Prometheus needed).

import { api } from '../api.js';
import { h, table, facts, fmtNum, ago, fmtTime, yesNo } from '../dom.js';
import { t } from '../i18n.js';
import { lineChart } from '../charts.js';

// Per-second rates between consecutive samples.
function rates(samples, pick) {
  const out = [];
  for (let i = 1; i < samples.length; i += 1) {
    const dt = (samples[i].at_ms - samples[i - 1].at_ms) / 1000;
    if (dt <= 0) continue;
    const d = pick(samples[i]) - pick(samples[i - 1]);
    out.push({ x: samples[i].at_ms, y: d >= 0 ? d / dt : 0 });
  }
  return out;
}

const sumWorkers = (s, k) => s.workers.reduce((a, w) => a + w[k], 0);

export async function healthPage(m) {
  m.append(h('h1', {}, t('nav.health')));
  const box = h('div', {});
  m.append(box);
  const refresh = async () => {
    const [c, hist] = await Promise.all([api('GET', '/v1/cluster'), api('GET', '/v1/history')]);
    const samples = hist.samples;
    // Each worker's rates over the last two samples that have it.
    const workerRate = (id, key) => {
      const withIt = samples.filter((s) => s.workers.some((w) => w.worker_id === id));
      if (withIt.length < 2) return null;
      const [a, b] = withIt.slice(-2);
      const wa = a.workers.find((w) => w.worker_id === id);
      const wb = b.workers.find((w) => w.worker_id === id);
      const dt = (b.at_ms - a.at_ms) / 1000;
      return dt > 0 ? Math.max(wb[key] - wa[key], 0) / dt : null;
    };
    const lookups = c.cache_hits + c.cache_misses;
    const parts = [facts([
      [t('health.version'), c.version],
      [t('health.ruleset'), h('code', {}, c.ruleset_id)],
      [t('health.store'), `${c.store} — ${c.store_healthy ? t('health.store_ok') : t('health.store_down', { error: c.store_error })}`],
      [t('health.workers'), fmtNum(c.workers.length)],
      [t('health.slots'), t('health.slots_value', { busy: fmtNum(c.busy_threads), total: fmtNum(c.threads) })],
      [t('health.cache'), lookups ? `${fmtNum((100 * c.cache_hits) / lookups, 1)} % (${fmtNum(c.cache_hits)} / ${fmtNum(lookups)})` : '—'],
      [t('health.busy'), fmtNum(c.busy_rejections)],
    ])];
    parts.push(h('h2', {}, t('health.workers')), table(null,
      [t('health.worker'), t('health.address'), t('health.threads'), t('health.in_flight'), t('health.scans_s'), t('health.mb_s'), t('health.p99'), t('health.scanned'), t('health.ruleset'), t('health.heartbeat')],
      c.workers.map((w) => {
        const sps = workerRate(w.worker_id, 'scanned');
        const bps = workerRate(w.worker_id, 'bytes_scanned');
        return h('tr', { 'data-worker': w.worker_id }, [
          h('code', {}, w.worker_id), w.address, fmtNum(w.threads), fmtNum(w.in_flight),
          sps === null ? '—' : fmtNum(sps, 2), bps === null ? '—' : fmtNum(bps / 1e6, 2),
          w.p99_ms ? `${fmtNum(w.p99_ms, 1)} ${t('unit.ms')}` : '—', fmtNum(w.scanned),
          h('span', { title: w.ruleset_id }, w.ruleset_id === c.ruleset_id ? t('health.current') : t('health.other', { id: w.ruleset_id.slice(0, 8) })),
          h('span', { title: fmtTime(w.last_heartbeat_ms) }, ago(w.last_heartbeat_ms)),
        ].map((x) => h('td', {}, x)));
      }), t('health.no_workers')));
    const hitRatio = [];
    for (let i = 1; i < samples.length; i += 1) {
      const hits = samples[i].cache_hits - samples[i - 1].cache_hits;
      const all = hits + samples[i].cache_misses - samples[i - 1].cache_misses;
      if (all > 0) hitRatio.push({ x: samples[i].at_ms, y: (100 * hits) / all });
    }
    parts.push(h('h2', {}, t('health.charts')), h('p', { class: 'note' }, t('health.charts_note', { n: samples.length, every: hist.every_secs })),
      h('div', { class: 'charts' },
        lineChart(t('health.chart_scans'), rates(samples, (s) => sumWorkers(s, 'scanned')), (v) => `${fmtNum(v, 2)} /s`),
        lineChart(t('health.chart_mb'), rates(samples, (s) => sumWorkers(s, 'bytes_scanned')).map((p) => ({ x: p.x, y: p.y / 1e6 })), (v) => `${fmtNum(v, 2)} MB/s`),
        lineChart(t('health.chart_uploads'), rates(samples, (s) => s.uploads), (v) => `${fmtNum(v, 2)} /s`),
        lineChart(t('health.chart_hits'), hitRatio, (v) => `${fmtNum(v, 1)} %`),
        lineChart(t('health.chart_p99'), samples.map((s) => ({ x: s.at_ms, y: Math.max(0, ...s.workers.map((w) => w.p99_us)) / 1000 })), (v) => `${fmtNum(v, 1)} ${t('unit.ms')}`),
        lineChart(t('health.chart_store'), samples.map((s) => ({ x: s.at_ms, y: s.store_healthy ? 1 : 0 })), (v) => yesNo(v >= 1))));
    box.replaceChildren(...parts);
  };
  await refresh();
  const timer = setInterval(() => refresh().catch(() => {}), 10000);
  return () => clearInterval(timer);
}
