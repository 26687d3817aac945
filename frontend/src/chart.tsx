import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  values: (number | null)[];
  color: string;
  dash?: number[];
  points?: boolean; // a marker on each value (default): isolated values between gaps show
}

/** A time series chart (uPlot, drawn on a canvas) with its figures also in a table for
 * keyboards and screen readers. */
export function Chart({
  title,
  times,
  series,
  testid,
  range,
  rows,
  empty,
}: {
  title: string;
  rows?: boolean[]; // which times the figures table lists (every one when absent)
  empty?: string; // said under the title when no series has a value
  range: [number, number]; // the requested time range (unix seconds): the x axis
  times: number[];
  series: Series[];
  testid: string;
}) {
  const box = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!box.current) return;
    const width = Math.max(300, Math.min(box.current.clientWidth || 560, 720));
    const plot = new uPlot(
      {
        title,
        width,
        height: 200,
        scales: { x: { time: true, range: () => range }, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        series: [
          {},
          ...series.map((s) => ({
            label: s.label,
            stroke: s.color,
            width: 2,
            dash: s.dash,
            spanGaps: false, // null is a gap in the line, never a zero
            points: { show: s.points ?? true, size: 6 },
          })),
        ],
        axes: [{}, { size: 60 }],
      },
      [times, ...series.map((s) => s.values)] as uPlot.AlignedData,
      box.current,
    );
    return () => plot.destroy();
  }, [title, range[0], range[1], JSON.stringify(times), JSON.stringify(series)]);
  const blank = series.every((s) => s.values.every((v) => v === null));
  return (
    <figure class="chart" data-testid={testid}>
      <div ref={box} role="img" aria-label={title} />
      {blank && empty && <p class="hint">{empty}</p>}
      <details>
        <summary>{title}: figures</summary>
        <table>
          <thead>
            <tr>
              <th scope="col">Time (UTC)</th>
              {series.map((s) => (
                <th scope="col">{s.label}</th>
              ))}
            </tr>
          </thead>
          <tbody>
            {times.map((t, i) =>
              rows && !rows[i] ? null : (
                <tr>
                  <td>{new Date(t * 1000).toISOString().replace(".000Z", "Z")}</td>
                  {series.map((s) => (
                    <td data-series={s.label}>{s.values[i] ?? ""}</td>
                  ))}
                </tr>
              ),
            )}
          </tbody>
        </table>
      </details>
    </figure>
  );
}
