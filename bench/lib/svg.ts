// Hand-written SVG bar charts: grouped vertical bars with min–max whiskers, optionally on a log
// scale, one or more panels side by side; and a horizontal bar list. No dependencies.

interface Bar {
  series: string;
  value: number;
  lo?: number;
  hi?: number;
}

interface Group {
  label: string;
  bars: Bar[];
}

interface Panel {
  title: string;
  unit: string;
  groups: Group[];
  log?: boolean;
  /** Horizontal reference lines (e.g. a target). */
  lines?: Array<{ value: number; label: string }>;
}

const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#b07aa1', '#9c755f'];
const W = 460;
const H = 300;
const M = { top: 40, right: 16, bottom: 58, left: 64 };

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(a >= 1e7 ? 0 : 1)}M`;
  if (a >= 1e4) return `${(v / 1e3).toFixed(0)}k`;
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function seriesOf(panels: Panel[]): string[] {
  const out: string[] = [];
  for (const p of panels)
    for (const g of p.groups) for (const b of g.bars) if (!out.includes(b.series)) out.push(b.series);
  return out;
}

function panelSvg(p: Panel, x0: number, series: string[]): string {
  const iw = W - M.left - M.right;
  const ih = H - M.top - M.bottom;
  const values = p.groups
    .flatMap((g) => g.bars.flatMap((b) => [b.value, b.hi ?? b.value]))
    .filter((v) => Number.isFinite(v) && v > 0);
  for (const l of p.lines ?? []) values.push(l.value);
  const top = p.log ? 10 ** Math.ceil(Math.log10(Math.max(...values, 1))) : niceMax(Math.max(...values, 0));
  const bottom = p.log ? 10 ** Math.floor(Math.log10(Math.max(Math.min(...values, top), 1e-3))) : 0;
  const y = (v: number): number => {
    if (p.log) {
      const c = Math.max(v, bottom);
      return M.top + ih - ((Math.log10(c) - Math.log10(bottom)) / (Math.log10(top) - Math.log10(bottom) || 1)) * ih;
    }
    return M.top + ih - (v / top) * ih;
  };
  const out: string[] = [`<g transform="translate(${x0},0)">`];
  out.push(`<text x="${W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(p.title)}</text>`);
  // grid + axis labels
  const ticks: number[] = [];
  if (p.log) for (let v = bottom; v <= top * 1.0001; v *= 10) ticks.push(v);
  else for (let i = 0; i <= 5; i++) ticks.push((top / 5) * i);
  for (const t of ticks) {
    const yy = y(t).toFixed(1);
    out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${yy}" y2="${yy}" stroke="#ddd"/>`);
    out.push(
      `<text x="${M.left - 6}" y="${yy}" text-anchor="end" dominant-baseline="middle" font-size="11" fill="#555">${fmt(t)}</text>`,
    );
  }
  out.push(
    `<text transform="translate(14,${M.top + ih / 2}) rotate(-90)" text-anchor="middle" font-size="11" fill="#333">${esc(p.unit)}${p.log ? ' (log)' : ''}</text>`,
  );
  const gw = iw / Math.max(p.groups.length, 1);
  p.groups.forEach((g, gi) => {
    const n = Math.max(g.bars.length, 1);
    const bw = Math.min(36, (gw * 0.8) / n);
    const gx = M.left + gi * gw + (gw - bw * n) / 2;
    g.bars.forEach((b, bi) => {
      const color = PALETTE[series.indexOf(b.series) % PALETTE.length];
      const x = gx + bi * bw;
      const v = Number.isFinite(b.value) ? b.value : 0;
      const yt = y(v);
      const base = y(bottom);
      out.push(
        `<rect x="${x.toFixed(1)}" y="${yt.toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${Math.max(0, base - yt).toFixed(1)}" fill="${color}"><title>${esc(`${b.series}: ${fmt(b.value)} ${p.unit}`)}</title></rect>`,
      );
      if (b.lo !== undefined && b.hi !== undefined && Number.isFinite(b.lo) && Number.isFinite(b.hi)) {
        const cx = (x + (bw - 2) / 2).toFixed(1);
        out.push(
          `<line x1="${cx}" x2="${cx}" y1="${y(b.lo).toFixed(1)}" y2="${y(b.hi).toFixed(1)}" stroke="#222" stroke-width="1"/>`,
        );
      }
      out.push(
        `<text x="${(x + (bw - 2) / 2).toFixed(1)}" y="${(yt - 4).toFixed(1)}" text-anchor="middle" font-size="${bw < 24 ? 7 : 9}" fill="#222">${fmt(b.value)}</text>`,
      );
    });
    out.push(
      `<text x="${(M.left + gi * gw + gw / 2).toFixed(1)}" y="${H - M.bottom + 16}" text-anchor="middle" font-size="11">${esc(g.label)}</text>`,
    );
  });
  for (const l of p.lines ?? []) {
    const yy = y(l.value).toFixed(1);
    out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${yy}" y2="${yy}" stroke="#c00" stroke-dasharray="4 3"/>`);
    out.push(`<text x="${M.left + 4}" y="${Number(yy) - 4}" font-size="10" fill="#c00">${esc(l.label)}</text>`);
  }
  out.push(`<line x1="${M.left}" x2="${W - M.right}" y1="${y(bottom)}" y2="${y(bottom)}" stroke="#333"/>`);
  out.push('</g>');
  return out.join('\n');
}

function legend(series: string[], width: number): string {
  const out: string[] = [];
  let x = M.left;
  const yy = H - 18;
  for (const [i, s] of series.entries()) {
    out.push(`<rect x="${x}" y="${yy - 9}" width="10" height="10" fill="${PALETTE[i % PALETTE.length]}"/>`);
    out.push(`<text x="${x + 14}" y="${yy}" font-size="11">${esc(s)}</text>`);
    x += 24 + s.length * 6.2;
    if (x > width - 80) break;
  }
  return out.join('\n');
}

/** Panels side by side, with one legend for all of them. */
export function barChart(panels: Panel[], caption = ''): string {
  const series = seriesOf(panels);
  const width = W * panels.length;
  const height = H + (caption ? 18 : 0);
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...panels.map((p, i) => panelSvg(p, i * W, series)),
    legend(series, width),
  ];
  if (caption) parts.push(`<text x="${M.left}" y="${H + 8}" font-size="10" fill="#666">${esc(caption)}</text>`);
  parts.push('</svg>');
  return `${parts.join('\n')}\n`;
}

/** Labelled horizontal bars (shares of a whole, e.g. profile areas). */
export function hbarChart(title: string, rows: Array<{ label: string; value: number }>, unit: string): string {
  const rowH = 22;
  const left = 330;
  const width = 760;
  const height = 44 + rows.length * rowH + 10;
  const max = Math.max(...rows.map((r) => r.value), 1);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    `<text x="${width / 2}" y="22" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>`,
  ];
  rows.forEach((r, i) => {
    const y = 40 + i * rowH;
    const w = ((width - left - 70) * r.value) / max;
    out.push(`<text x="${left - 8}" y="${y + 12}" text-anchor="end" font-size="11">${esc(r.label)}</text>`);
    out.push(
      `<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${rowH - 6}" fill="${PALETTE[i % PALETTE.length]}"/>`,
    );
    out.push(`<text x="${(left + w + 6).toFixed(1)}" y="${y + 12}" font-size="11">${fmt(r.value)} ${esc(unit)}</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
