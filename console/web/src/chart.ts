// Time-series charts with uPlot (a maintained, 50 KB canvas chart library).
// A canvas says nothing to a screen reader, so each chart comes with the
// same numbers as a table under a disclosure, and a caption that sums
// them up.

import uPlot from 'uplot';
import 'uplot/dist/uPlot.min.css';
import { h } from './dom';

export interface Series {
  label: string;
  values: (number | null)[];
}

// Colours that stay apart for the common kinds of colour blindness
// (Okabe–Ito), in the order entities are listed.
const palette = ['#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9', '#000000'];

export interface Chart {
  el: HTMLElement;
  update(xs: number[], series: Series[]): void;
}

/** lineChart is a figure with a chart of series over xs (Unix seconds). */
export function lineChart(title: string, unit: string, testid: string): Chart {
  const plotEl = h('div', { class: 'plot', 'aria-hidden': 'true' });
  const caption = h('figcaption', null, title);
  const summary = h('p', { class: 'hint' });
  const table = h('table', { class: 'data' });
  const fig = h(
    'figure',
    { class: 'chart', 'data-testid': testid, 'data-points': '0', role: 'group', 'aria-label': title },
    caption,
    plotEl,
    summary,
    h('details', null, h('summary', null, `${title}: the numbers`), table),
  );
  let plot: uPlot | null = null;
  let keys = '';

  function build(series: Series[]): void {
    plot?.destroy();
    const width = Math.max(280, (fig.clientWidth || 600) - 16);
    plot = new uPlot(
      {
        width,
        height: 200,
        // The last hour, whatever the data: one point alone would
        // otherwise stretch the axis over years.
        scales: { x: { time: true, range: () => { const now = Date.now() / 1000; return [now - 3600, now + 60]; } } },
        axes: [{}, { label: unit, size: 60 }],
        series: [
          {},
          ...series.map((s, i) => ({
            label: s.label,
            stroke: palette[i % palette.length],
            width: 2,
            points: { show: true, size: 5 },
            spanGaps: false,
          })),
        ],
      },
      [[]],
      plotEl,
    );
  }

  new ResizeObserver(() => {
    if (plot && fig.clientWidth) plot.setSize({ width: Math.max(280, fig.clientWidth - 16), height: 200 });
  }).observe(fig);

  return {
    el: fig,
    update(xs, series) {
      const k = series.map((s) => s.label).join('\n');
      if (!plot || k !== keys) {
        keys = k;
        build(series);
      }
      plot!.setData([xs, ...series.map((s) => s.values)] as uPlot.AlignedData);
      // The test reads what the chart itself holds.
      const points = series.reduce((n, s) => n + s.values.filter((v) => v !== null).length, 0);
      fig.dataset.points = String(points);
      summary.textContent = xs.length
        ? `${points} points over ${xs.length} minute${xs.length === 1 ? '' : 's'}, ${series.map((s) => s.label).join(', ')}.`
        : 'No data yet.';
      table.replaceChildren(
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'minute'), series.map((s) => h('th', { scope: 'col' }, s.label)))),
        h(
          'tbody',
          null,
          xs.map((x, i) =>
            h(
              'tr',
              null,
              h('th', { scope: 'row' }, new Date(x * 1000).toLocaleTimeString()),
              series.map((s) => h('td', null, s.values[i] === null ? '—' : String(round(s.values[i]!)))),
            ),
          ),
        ),
      );
    },
  };
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/** pivot turns rows of (x, key, value) into aligned series per key. */
export function pivot(rows: { x: number; key: string; value: number | null }[]): { xs: number[]; byKey: Map<string, (number | null)[]> } {
  const xs = [...new Set(rows.map((r) => r.x))].sort((a, b) => a - b);
  const at = new Map(xs.map((x, i) => [x, i]));
  const byKey = new Map<string, (number | null)[]>();
  for (const r of rows) {
    let vs = byKey.get(r.key);
    if (!vs) {
      vs = new Array(xs.length).fill(null);
      byKey.set(r.key, vs);
    }
    vs[at.get(r.x)!] = r.value;
  }
  return { xs, byKey };
}
