// Line charts of the last hour, drawn as SVG elements (no library, no markup).

import { h } from './dom.js';
import { t } from './i18n.js';

const NS = 'http://www.w3.org/2000/svg';

function svg(tag, attrs) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

// `points`: [{x: ms, y: number}], oldest first. `fmt` formats a value.
export function lineChart(title, points, fmt) {
  const W = 320;
  const H = 110;
  const P = 4;
  const last = points.length ? points[points.length - 1].y : null;
  const fig = h('figure', { class: 'chart' });
  const caption = h('figcaption', {}, title, ': ', last === null ? t('chart.no_data') : fmt(last));
  const box = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${last === null ? t('chart.no_data') : fmt(last)}` });
  box.append(svg('rect', { x: 0, y: 0, width: W, height: H, class: 'bg' }));
  if (points.length > 1) {
    const x0 = points[0].x;
    const x1 = points[points.length - 1].x;
    const ymax = Math.max(...points.map((p) => p.y), 1e-9);
    const xs = (x) => P + ((x - x0) / Math.max(x1 - x0, 1)) * (W - 2 * P);
    const ys = (y) => H - P - (y / ymax) * (H - 2 * P);
    const d = points.map((p, i) => `${i ? 'L' : 'M'}${xs(p.x).toFixed(1)},${ys(p.y).toFixed(1)}`).join(' ');
    box.append(svg('path', { d, class: 'line' }));
    const top = svg('text', { x: W - P, y: 12, 'text-anchor': 'end', class: 'axis' });
    top.textContent = fmt(ymax);
    box.append(top);
  }
  fig.append(box, caption);
  return fig;
}
