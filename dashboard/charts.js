/*
 * AgentCom dashboard: small SVG line charts.
 *
 * Classic script (no modules), loaded before app.js. Exposes
 *   window.AgentComCharts.line(svgElement, series, options)
 * series:  [{label, data: [[t, value|null], ...] | [{t, v}], className?}]
 * options: {formatX(t), formatY(v), yMin, yMax, minSpan (ms), emptyText, title, area}
 *
 * The viewBox is set to the element's rendered pixel size so text is never scaled;
 * call line() again when the element is resized. Styling is done by CSS classes only
 * (the page runs under a strict CSP).
 */
(function () {
  'use strict';

  const NS = 'http://www.w3.org/2000/svg';

  function node(tag, attrs, parent) {
    const el = document.createElementNS(NS, tag);
    if (attrs) {
      for (const k of Object.keys(attrs)) el.setAttribute(k, String(attrs[k]));
    }
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, str, cls, anchor) {
    const t = node('text', { x: x, y: y, class: cls || '' }, parent);
    if (anchor) t.setAttribute('text-anchor', anchor);
    t.textContent = str;
    return t;
  }

  /** A step of 1, 2, 2.5 or 5 times a power of ten giving about `count` intervals. */
  function niceStep(span, count) {
    if (!(span > 0)) return 1;
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const n = raw / mag;
    const m = n <= 1 ? 1 : n <= 2 ? 2 : n <= 2.5 ? 2.5 : n <= 5 ? 5 : 10;
    return m * mag;
  }

  function pad2(n) { return String(n).padStart(2, '0'); }

  function defaultFormatX(t) {
    const d = new Date(t);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes());
  }

  function secondsFormatX(t) {
    const d = new Date(t);
    return pad2(d.getHours()) + ':' + pad2(d.getMinutes()) + ':' + pad2(d.getSeconds());
  }

  function defaultFormatY(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(1) + 'M';
    if (a >= 1e3) return (v / 1e3).toFixed(1) + 'k';
    return String(Math.round(v * 100) / 100);
  }

  function normalize(series) {
    return (Array.isArray(series) ? series : []).map(function (s, i) {
      const pts = [];
      const data = (s && Array.isArray(s.data)) ? s.data : [];
      for (const p of data) {
        const x = Array.isArray(p) ? p[0] : (p && p.t);
        const y = Array.isArray(p) ? p[1] : (p && p.v);
        if (typeof x !== 'number' || !isFinite(x)) continue;
        pts.push([x, (typeof y === 'number' && isFinite(y)) ? y : null]);
      }
      pts.sort(function (a, b) { return a[0] - b[0]; });
      return {
        label: (s && s.label) || ('series ' + (i + 1)),
        className: (s && s.className) || ('s' + i),
        pts: pts,
      };
    });
  }

  function lastValue(pts) {
    for (let i = pts.length - 1; i >= 0; i--) if (pts[i][1] !== null) return pts[i][1];
    return null;
  }

  /** Rough text width for 11px UI text (we cannot measure before layout). */
  function textWidth(str) { return String(str).length * 6.4; }

  function line(svg, series, options) {
    if (!svg) return;
    const o = options || {};
    const data = normalize(series);
    const box = svg.getBoundingClientRect();
    const W = Math.max(160, Math.round(o.width || box.width || 600));
    const H = Math.max(90, Math.round(o.height || box.height || 160));
    let fx = o.formatX || defaultFormatX;
    const fy = o.formatY || defaultFormatY;

    svg.setAttribute('viewBox', '0 0 ' + W + ' ' + H);
    svg.replaceChildren();
    if (o.title) node('title', null, svg).textContent = o.title;

    let xMin = Infinity, xMax = -Infinity, yLo = Infinity, yHi = -Infinity, any = false;
    for (const s of data) {
      for (const p of s.pts) {
        if (p[0] < xMin) xMin = p[0];
        if (p[0] > xMax) xMax = p[0];
        if (p[1] !== null) {
          any = true;
          if (p[1] < yLo) yLo = p[1];
          if (p[1] > yHi) yHi = p[1];
        }
      }
    }

    if (!any) {
      svg.dataset.empty = 'true';
      svg.__chart = null;
      const t = text(svg, W / 2, H / 2, o.emptyText || 'no data yet', 'chart-empty', 'middle');
      t.setAttribute('dominant-baseline', 'middle');
      return;
    }
    svg.dataset.empty = 'false';

    // X domain: the data's span, at least minSpan wide, ending at the newest point.
    const minSpan = typeof o.minSpan === 'number' ? o.minSpan : 60000;
    if (xMax - xMin < minSpan) xMin = xMax - minSpan;
    if (!o.formatX && xMax - xMin <= 10 * 60000) fx = secondsFormatX;

    // Y domain: from yMin (default min(0, data)) to a nice ceiling or the fixed yMax.
    let lo = typeof o.yMin === 'number' ? Math.min(o.yMin, yLo) : Math.min(0, yLo);
    let hi;
    let step;
    if (typeof o.yMax === 'number') {
      hi = Math.max(o.yMax, yHi);
      step = niceStep(hi - lo, 4);
    } else {
      hi = yHi;
      if (hi <= lo) hi = lo + (o.integer ? 4 : 1);
      step = niceStep(hi - lo, 3);
      if (o.integer && step < 1) step = 1;
      hi = Math.ceil(hi / step - 1e-9) * step;
      if (hi <= lo) hi = lo + step;
    }
    const ticks = [];
    for (let v = lo, guard = 0; v <= hi + step * 1e-6 && guard < 20; v += step, guard++) {
      ticks.push(Math.round(v * 1e6) / 1e6);
    }

    const yLabels = ticks.map(fy);
    const left = Math.ceil(Math.max.apply(null, yLabels.map(textWidth))) + 10;
    const right = 10;
    const top = 22;
    const bottom = 20;
    const px0 = left, px1 = W - right, py0 = top, py1 = H - bottom;
    const sx = function (x) { return px0 + (x - xMin) / (xMax - xMin) * (px1 - px0); };
    const sy = function (y) { return py1 - (y - lo) / (hi - lo) * (py1 - py0); };
    const r1 = function (v) { return Math.round(v * 10) / 10; };

    // Grid and y labels.
    const grid = node('g', { class: 'chart-grid' }, svg);
    ticks.forEach(function (v, i) {
      const y = r1(sy(v));
      node('line', { x1: px0, x2: px1, y1: y, y2: y, class: i === 0 ? 'chart-axis' : 'chart-gridline' }, grid);
      const t = text(grid, px0 - 6, y, yLabels[i], 'chart-label', 'end');
      t.setAttribute('dominant-baseline', 'middle');
    });

    // X labels.
    const xCount = Math.max(1, Math.min(6, Math.floor((px1 - px0) / 90)));
    let prevLabel = null;
    for (let i = 0; i <= xCount; i++) {
      const t = xMin + (xMax - xMin) * i / xCount;
      const x = r1(sx(t));
      const label = fx(t);
      if (label === prevLabel) continue;
      prevLabel = label;
      node('line', { x1: x, x2: x, y1: py1, y2: py1 + 3, class: 'chart-axis' }, grid);
      text(grid, x, H - 5, label, 'chart-label', i === 0 ? 'start' : i === xCount ? 'end' : 'middle');
    }

    // Series.
    const plot = node('g', { class: 'chart-plot' }, svg);
    const wantArea = data.length === 1 && o.area !== false;
    for (const s of data) {
      const segs = [];
      let cur = [];
      for (const p of s.pts) {
        if (p[1] === null || p[0] < xMin) {
          if (cur.length) segs.push(cur);
          cur = [];
          continue;
        }
        cur.push([r1(sx(p[0])), r1(sy(p[1]))]);
      }
      if (cur.length) segs.push(cur);
      let d = '';
      let area = '';
      for (const seg of segs) {
        if (seg.length === 1) {
          node('circle', { cx: seg[0][0], cy: seg[0][1], r: 2.5, class: 'chart-dot ' + s.className }, plot);
          continue;
        }
        d += 'M' + seg.map(function (q) { return q[0] + ' ' + q[1]; }).join('L');
        if (wantArea) {
          area += 'M' + seg[0][0] + ' ' + py1 + 'L' + seg.map(function (q) { return q[0] + ' ' + q[1]; }).join('L') +
            'L' + seg[seg.length - 1][0] + ' ' + py1 + 'Z';
        }
      }
      if (area) node('path', { d: area, class: 'chart-area ' + s.className }, plot);
      if (d) node('path', { d: d, class: 'chart-line ' + s.className }, plot);
    }

    // Legend with the newest value of each series.
    const legend = node('g', { class: 'chart-legend' }, svg);
    let lx = px0;
    for (const s of data) {
      const v = lastValue(s.pts);
      const label = s.label + ' ' + (v === null ? '—' : fy(v));
      node('rect', { x: lx, y: 7, width: 10, height: 4, rx: 1, class: 'chart-swatch ' + s.className }, legend);
      text(legend, lx + 14, 13, label, 'chart-legend-text');
      lx += 14 + textWidth(label) + 14;
    }

    // Hover read-out.
    const hover = node('g', { class: 'chart-hover', visibility: 'hidden' }, svg);
    const guide = node('line', { x1: 0, x2: 0, y1: py0, y2: py1, class: 'chart-guide' }, hover);
    const tipBg = node('rect', { x: 0, y: 0, width: 10, height: 10, rx: 3, class: 'chart-tip-bg' }, hover);
    const tipText = node('text', { x: 0, y: 0, class: 'chart-tip' }, hover);
    node('rect', { x: px0, y: py0, width: Math.max(1, px1 - px0), height: Math.max(1, py1 - py0), class: 'chart-hit' }, svg);

    svg.__chart = {
      data: data, W: W, px0: px0, px1: px1, py0: py0, xMin: xMin, xMax: xMax,
      sx: sx, fx: fx, fy: fy, hover: hover, guide: guide, tipBg: tipBg, tipText: tipText,
    };

    if (!svg.__chartBound) {
      svg.__chartBound = true;
      svg.addEventListener('pointermove', onMove);
      svg.addEventListener('pointerleave', onLeave);
    }
  }

  function onLeave(ev) {
    const c = ev.currentTarget.__chart;
    if (c) c.hover.setAttribute('visibility', 'hidden');
  }

  function onMove(ev) {
    const svg = ev.currentTarget;
    const c = svg.__chart;
    if (!c) return;
    const box = svg.getBoundingClientRect();
    if (!box.width) return;
    const x = (ev.clientX - box.left) * (c.W / box.width);
    if (x < c.px0 - 4 || x > c.px1 + 4) { c.hover.setAttribute('visibility', 'hidden'); return; }
    const t = c.xMin + (x - c.px0) / (c.px1 - c.px0) * (c.xMax - c.xMin);
    // Nearest timestamp across all series.
    let best = null;
    for (const s of c.data) {
      for (const p of s.pts) {
        if (p[0] < c.xMin) continue;
        if (best === null || Math.abs(p[0] - t) < Math.abs(best - t)) best = p[0];
      }
    }
    if (best === null) return;
    const lines = [c.fx(best)];
    for (const s of c.data) {
      let v = null;
      for (const p of s.pts) if (p[0] === best) { v = p[1]; break; }
      lines.push(s.label + ': ' + (v === null ? '—' : c.fy(v)));
    }
    const gx = Math.round(c.sx(best) * 10) / 10;
    c.guide.setAttribute('x1', gx);
    c.guide.setAttribute('x2', gx);
    c.tipText.replaceChildren();
    let w = 0;
    lines.forEach(function (l, i) {
      const ts = document.createElementNS(NS, 'tspan');
      ts.setAttribute('dy', i === 0 ? '0' : '13');
      ts.textContent = l;
      c.tipText.appendChild(ts);
      w = Math.max(w, textWidth(l));
    });
    const tw = w + 12;
    const th = lines.length * 13 + 8;
    let tx = gx + 8;
    if (tx + tw > c.px1) tx = gx - 8 - tw;
    if (tx < 0) tx = 0;
    const ty = c.py0;
    c.tipBg.setAttribute('x', tx);
    c.tipBg.setAttribute('y', ty);
    c.tipBg.setAttribute('width', tw);
    c.tipBg.setAttribute('height', th);
    c.tipText.setAttribute('x', tx + 6);
    c.tipText.setAttribute('y', ty + 14);
    for (const ts of c.tipText.children) ts.setAttribute('x', tx + 6);
    c.hover.setAttribute('visibility', 'visible');
  }

  window.AgentComCharts = Object.freeze({ line: line, niceStep: niceStep });
})();
