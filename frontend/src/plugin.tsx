import { useEffect, useState } from "preact/hooks";
import { api, holds } from "./api";
import { Chart } from "./chart";
import { ErrorBox, HealthDot, READ_ONLY_REASON, StatusBadge } from "./common";
import { REFRESH_MS } from "./catalogue";

interface FieldSchema {
  type?: string;
  required?: boolean;
  default?: unknown;
  secret?: boolean;
  description?: string;
  hot_reload?: boolean;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
}

interface Detail {
  id: string;
  name: string;
  type: string;
  version: string;
  status: string;
  status_reason: string | null;
  description: string | null;
  category: string | null;
  class_path: string;
  isolation: string;
  metadata: Record<string, unknown>;
  configuration_schema: Record<string, FieldSchema>;
  configuration: Record<string, unknown>;
  pending_restart: string[];
  operations: string[];
  health: { status: string | null; message: string | null; last_check: string | null };
  documentation_url: string | null;
  repository_url: string | null;
}

const MASK = "********";
type Values = Record<string, string | boolean>;

function initialValues(d: Detail): Values {
  const v: Values = {};
  for (const [name, f] of Object.entries(d.configuration_schema)) {
    const current = d.configuration[name];
    const value = current !== undefined && current !== MASK ? current : f.secret ? "" : f.default;
    if (f.type === "boolean") v[name] = value === true;
    else if (value === undefined || value === null) v[name] = "";
    else if (typeof value === "object") v[name] = JSON.stringify(value);
    else v[name] = String(value);
  }
  return v;
}

function collect(d: Detail, values: Values, only?: Set<string>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, f] of Object.entries(d.configuration_schema)) {
    if (only && !only.has(name)) continue;
    const v = values[name];
    if (f.type === "boolean") {
      out[name] = v === true;
      continue;
    }
    if (f.secret && v === "" && d.configuration[name] === MASK) {
      out[name] = MASK; // the service keeps the stored secret
      continue;
    }
    if (v === "" || v === undefined) continue;
    const s = String(v);
    if (f.type === "integer" || f.type === "number") out[name] = Number(s);
    else if (f.type === "object" || f.type === "array") {
      try {
        out[name] = JSON.parse(s);
      } catch {
        out[name] = s; // the API names the field and why
      }
    } else out[name] = s;
  }
  return out;
}

function Field({
  name,
  f,
  value,
  disabled,
  onChange,
}: {
  name: string;
  f: FieldSchema;
  value: string | boolean;
  disabled: boolean;
  onChange: (v: string | boolean) => void;
}) {
  const id = `cfg-${name}`;
  const marks = (
    <>
      {f.required && <span class="mark"> (required)</span>}
      {f.hot_reload === false && (
        <span class="mark restart" data-testid={`restart-mark-${name}`}>
          {" "}
          restarts the plugin
        </span>
      )}
      {f.secret && <span class="mark"> secret</span>}
    </>
  );
  let input;
  if (f.type === "boolean") {
    input = (
      <input
        id={id}
        name={name}
        type="checkbox"
        checked={value === true}
        disabled={disabled}
        onChange={(e) => onChange((e.target as HTMLInputElement).checked)}
      />
    );
  } else if (f.enum && f.enum.length > 0) {
    input = (
      <select
        id={id}
        name={name}
        value={String(value)}
        disabled={disabled}
        onChange={(e) => onChange((e.target as HTMLSelectElement).value)}
      >
        {!f.required && <option value="">(default)</option>}
        {f.enum.map((o) => (
          <option value={String(o)}>{String(o)}</option>
        ))}
      </select>
    );
  } else if (f.type === "object" || f.type === "array") {
    input = (
      <textarea
        id={id}
        name={name}
        rows={2}
        value={String(value)}
        disabled={disabled}
        onInput={(e) => onChange((e.target as HTMLTextAreaElement).value)}
      />
    );
  } else {
    const numeric = f.type === "integer" || f.type === "number";
    input = (
      <input
        id={id}
        name={name}
        type={(f.secret ? "password" : numeric ? "number" : "text") as "text"}
        step={f.type === "integer" ? 1 : numeric ? "any" : undefined}
        min={f.minimum}
        max={f.maximum}
        autocomplete={f.secret ? "new-password" : "off"}
        placeholder={
          f.secret ? "unchanged (never shown)" : f.default !== undefined ? String(f.default) : ""
        }
        value={String(value)}
        disabled={disabled}
        onInput={(e) => onChange((e.target as HTMLInputElement).value)}
      />
    );
  }
  return (
    <div class="field">
      <label for={id}>
        <code>{name}</code> <span class="type">{f.type}</span>
        {marks}
      </label>
      {input}
      {f.description && <small>{f.description}</small>}
    </div>
  );
}

function List({ items }: { items: unknown }) {
  const arr = Array.isArray(items) ? items : [];
  return arr.length ? <>{arr.map(String).join(", ")}</> : <span class="none">none</span>;
}

export function PluginPage({ id }: { id: string }) {
  const [detail, setDetail] = useState<Detail | null>(null);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [values, setValues] = useState<Values>({});
  const [touched, setTouched] = useState<Set<string>>(new Set());
  const [restart, setRestart] = useState(false);
  const [actionError, setActionError] = useState<unknown>(null);
  const [notice, setNotice] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const [operation, setOperation] = useState("");
  const [args, setArgs] = useState("{}");
  const [result, setResult] = useState<unknown>(undefined);
  const [tick, setTick] = useState(0);
  const canWrite = holds("plugins:write");

  useEffect(() => {
    let live = true;
    let first = true;
    const load = () =>
      api<Detail>("GET", `/v1/plugins/${encodeURIComponent(id)}`)
        .then((a) => {
          if (!live) return;
          setDetail(a.data);
          setLoadError(null);
          if (first) {
            first = false;
            setValues(initialValues(a.data));
            setOperation(a.data.operations[0] ?? "");
          }
          setTick((t) => t + 1);
        })
        .catch((e) => live && setLoadError(e));
    load();
    const timer = window.setInterval(load, REFRESH_MS);
    return () => {
      live = false;
      window.clearInterval(timer);
    };
  }, [id]);

  if (!detail) {
    return loadError ? <ErrorBox error={loadError} /> : <p aria-busy="true">Loading…</p>;
  }
  const d = detail;
  const m = d.metadata;

  async function act(what: string, call: () => Promise<unknown>, done: (r: any) => string) {
    setBusy(true);
    setActionError(null);
    setNotice(null);
    try {
      const r = await call();
      setNotice(done(r));
      const fresh = await api<Detail>("GET", `/v1/plugins/${encodeURIComponent(id)}`);
      setDetail(fresh.data);
      setTick((t) => t + 1); // the metrics too
    } catch (e) {
      setActionError(e);
    } finally {
      setBusy(false);
    }
    void what;
  }

  const activate = () =>
    act(
      "activate",
      () =>
        api("POST", `/v1/plugins/${encodeURIComponent(id)}/activate`, {
          // what is set, required or typed: the plugin's own defaults apply to the rest
          configuration: collect(
            d,
            values,
            new Set(
              Object.entries(d.configuration_schema)
                .filter(([n, f]) => n in d.configuration || f.required || touched.has(n))
                .map(([n]) => n),
            ),
          ),
          auto_start: true,
        }),
      (r) => `Activated: ${r.data.status}, health ${r.data.health_check?.status ?? "unknown"}`,
    );
  const deactivate = () =>
    act(
      "deactivate",
      () => api("POST", `/v1/plugins/${encodeURIComponent(id)}/deactivate`, {}),
      (r) => `Deactivated: ${r.data.status}`,
    );
  const configure = () =>
    act(
      "configure",
      () =>
        api("PATCH", `/v1/plugins/${encodeURIComponent(id)}/configuration`, {
          configuration: collect(d, values, touched),
          restart_required: restart,
        }),
      (r) =>
        `Configuration updated: ${(r.data.updated_fields ?? []).join(", ") || "nothing changed"}` +
        (r.data.restarted ? " (restarted)" : "") +
        (r.data.pending_restart?.length
          ? `; waiting for a restart: ${r.data.pending_restart.join(", ")}`
          : ""),
    );
  const invoke = () => {
    let parsed: unknown;
    try {
      parsed = JSON.parse(args || "{}");
    } catch (e) {
      setActionError(`Arguments are not JSON: ${e}`);
      return;
    }
    act(
      "invoke",
      async () => {
        const r = await api<{ result: unknown; duration_ms: number }>(
          "POST",
          `/v1/plugins/${encodeURIComponent(id)}/invoke`,
          { operation, arguments: parsed },
        );
        setResult(r.data.result);
        return r;
      },
      (r) => `Invoked ${operation} in ${r.data.duration_ms} ms`,
    );
  };

  const writeTitle = canWrite ? undefined : READ_ONLY_REASON;
  const writeDisabled = busy || !canWrite;

  return (
    <article aria-labelledby="plugin-title">
      <p>
        <a href="#/">← Catalogue</a>
      </p>
      <h1 id="plugin-title">
        {d.name} <span class="version">{d.version}</span> <StatusBadge status={d.status} />{" "}
        <HealthDot status={d.health?.status} />
      </h1>
      {d.status_reason && <p class="reason">{d.status_reason}</p>}
      <p>{d.description}</p>
      {!canWrite && (
        <p class="readonly" role="note" data-testid="read-only-reason">
          {READ_ONLY_REASON}.
        </p>
      )}

      <div class="grid">
        <section aria-labelledby="meta-title">
          <h2 id="meta-title">Metadata</h2>
          <dl class="meta">
            <dt>id</dt>
            <dd>{d.id}</dd>
            <dt>type</dt>
            <dd>{d.type}</dd>
            <dt>category</dt>
            <dd>{d.category ?? "none"}</dd>
            <dt>class</dt>
            <dd>
              <code>{d.class_path}</code> ({d.isolation})
            </dd>
            <dt>capabilities</dt>
            <dd>
              <List items={m.capabilities} />
            </dd>
            <dt>integration points</dt>
            <dd>
              <List items={m.integration_points} />
            </dd>
            <dt>conflicts with</dt>
            <dd>
              <List items={m.conflicts_with} />
            </dd>
            <dt>health</dt>
            <dd data-testid="health-message">{d.health?.message ?? "not checked yet"}</dd>
          </dl>
          <h2>Requirements</h2>
          <dl class="meta">
            <dt>memory</dt>
            <dd>{String(m.min_memory_mb ?? 0)} MB</dd>
            <dt>CPU cores</dt>
            <dd>{String(m.min_cpu_cores ?? 0)}</dd>
            <dt>GPU</dt>
            <dd>{m.gpu_required ? "required" : "not required"}</dd>
            <dt>python</dt>
            <dd>{String(m.min_python_version ?? "any")}</dd>
            <dt>plugins required</dt>
            <dd>
              <List items={m.requires} />
            </dd>
            <dt>python packages</dt>
            <dd>
              <List items={m.python_requirements} />
            </dd>
            <dt>platforms</dt>
            <dd>
              <List items={m.supported_platforms} />
            </dd>
          </dl>
          <h2>Current configuration</h2>
          {/* focusable: a long configuration scrolls, and a keyboard must reach it */}
          <pre data-testid="configuration" tabIndex={0} aria-label="Current configuration">
            {JSON.stringify(d.configuration, null, 2)}
          </pre>
          {d.pending_restart.length > 0 && (
            <p>Waiting for a restart: {d.pending_restart.join(", ")}</p>
          )}
        </section>

        <section aria-labelledby="config-title">
          <h2 id="config-title">Configuration</h2>
          <form
            class="config"
            aria-label="Configuration"
            // the API checks every value against the schema and words the refusal (field,
            // reason); the browser's own checks would stop the request with words of its own
            noValidate
            onSubmit={(e) => {
              e.preventDefault();
              configure();
            }}
          >
            {Object.entries(d.configuration_schema).map(([name, f]) => (
              <Field
                name={name}
                f={f}
                value={values[name] ?? ""}
                disabled={!canWrite}
                onChange={(v) => {
                  setValues({ ...values, [name]: v });
                  setTouched(new Set([...touched, name]));
                }}
              />
            ))}
            {Object.keys(d.configuration_schema).length === 0 && <p>No settings.</p>}
            <label class="inline">
              <input
                type="checkbox"
                name="restart_required"
                checked={restart}
                disabled={!canWrite}
                onChange={(e) => setRestart((e.target as HTMLInputElement).checked)}
              />
              Allow a restart (for fields that restart the plugin)
            </label>
            <div class="actions">
              <button type="button" onClick={activate} disabled={writeDisabled} title={writeTitle}>
                Activate
              </button>
              <button
                type="button"
                onClick={deactivate}
                disabled={writeDisabled}
                title={writeTitle}
              >
                Deactivate
              </button>
              <button type="submit" disabled={writeDisabled} title={writeTitle}>
                Save configuration
              </button>
            </div>
          </form>
          {notice && (
            <p class="notice" role="status">
              {notice}
            </p>
          )}
          <ErrorBox error={actionError} />

          <h2 id="invoke-title">Invoke</h2>
          <form
            aria-labelledby="invoke-title"
            onSubmit={(e) => {
              e.preventDefault();
              invoke();
            }}
          >
            <label for="operation">Operation</label>
            <select
              id="operation"
              name="operation"
              value={operation}
              onChange={(e) => setOperation((e.target as HTMLSelectElement).value)}
            >
              {d.operations.map((o) => (
                <option value={o}>{o}</option>
              ))}
            </select>
            <label for="arguments">Arguments (JSON)</label>
            <textarea
              id="arguments"
              name="arguments"
              rows={3}
              value={args}
              onInput={(e) => setArgs((e.target as HTMLTextAreaElement).value)}
            />
            <button type="submit" disabled={writeDisabled || !operation} title={writeTitle}>
              Invoke
            </button>
          </form>
          {result !== undefined && (
            <pre data-testid="invoke-result" tabIndex={0} aria-label="Invocation result">
              {JSON.stringify(result, null, 2)}
            </pre>
          )}
        </section>
      </div>
      <Metrics id={id} tick={tick} />
    </article>
  );
}

interface MetricsReport {
  time_range: { start: string; end: string };
  granularity: string;
  metrics: {
    execution_count: number;
    error_count: number;
    success_rate: number | null;
    avg_execution_time_ms: number;
    p50_execution_time_ms: number;
    p95_execution_time_ms: number;
    p99_execution_time_ms: number;
    resource_usage: { avg_memory_mb: number; peak_memory_mb: number; samples: number };
  };
  timeseries: Point[];
}

/** One bucket of the series: quantiles are null when the bucket had no calls (or in a minute
 * series of more than 6 hours, which the page never asks for), memory when it had no
 * samples (in-process plugins have none). */
interface Point {
  timestamp: string;
  execution_count: number;
  error_count: number;
  avg_execution_time_ms: number;
  p50_execution_time_ms: number | null;
  p95_execution_time_ms: number | null;
  p99_execution_time_ms: number | null;
  avg_memory_mb: number | null;
  peak_memory_mb: number | null;
}

const STEP: Record<string, number> = { minute: 60, hour: 3600, day: 86400 };

/** Every bucket of the range (unix seconds), and the answer's point of each, if any: a bucket
 * the answer left out had neither calls nor samples, drawn as a gap (or 0 calls), so the line
 * does not join the buckets either side of it. */
function grid(report: MetricsReport, granularity: string): [number[], (Point | undefined)[]] {
  const step = STEP[granularity];
  const start = Math.floor(Date.parse(report.time_range.start) / 1000 / step) * step;
  const end = Date.parse(report.time_range.end) / 1000;
  const byTime = new Map(report.timeseries.map((p) => [Date.parse(p.timestamp) / 1000, p]));
  const times: number[] = [];
  for (let t = start; t < end; t += step) times.push(t);
  return [times, times.map((t) => byTime.get(t))];
}

const RANGES: Record<string, number> = { minute: 3600, hour: 86400, day: 30 * 86400 };
const RANGE_WORDS: Record<string, string> = {
  minute: "last hour, per minute",
  hour: "last 24 hours, per hour",
  day: "last 30 days, per day",
};

function Metrics({ id, tick }: { id: string; tick: number }) {
  const [granularity, setGranularity] = useState("minute");
  const [report, setReport] = useState<MetricsReport | null>(null);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    let live = true;
    const end = new Date();
    const start = new Date(end.getTime() - RANGES[granularity] * 1000);
    const q = new URLSearchParams({
      granularity,
      start_time: start.toISOString(),
      end_time: end.toISOString(),
    });
    api<MetricsReport>("GET", `/v1/plugins/${encodeURIComponent(id)}/metrics?${q}`)
      .then((a) => {
        if (!live) return;
        setReport(a.data);
        setError(null);
      })
      .catch((e) => live && setError(e));
    return () => {
      live = false;
    };
  }, [id, granularity, tick]); // refreshed with the plugin's details

  // the granularity of the answer shown (the picker may have moved on while it loads)
  const [times, points] = report ? grid(report, report.granularity) : [[], []];
  const rows = points.map((p) => p !== undefined);
  const of = (read: (p: Point) => number | null) =>
    points.map((p) => (p === undefined ? null : read(p)));
  const f = report?.metrics;
  const range: [number, number] = report
    ? [Date.parse(report.time_range.start) / 1000, Date.parse(report.time_range.end) / 1000]
    : [0, 1];
  return (
    <section aria-labelledby="metrics-title" class="metrics">
      <h2 id="metrics-title">Metrics</h2>
      <fieldset>
        <legend>Time range</legend>
        {Object.keys(RANGES).map((g) => (
          <label class="inline">
            <input
              type="radio"
              name="granularity"
              value={g}
              checked={granularity === g}
              onChange={() => setGranularity(g)}
            />
            {g} ({RANGE_WORDS[g]})
          </label>
        ))}
      </fieldset>
      <ErrorBox error={error} />
      {f && (
        <dl class="figures">
          <div>
            <dt>Executions</dt>
            <dd data-testid="execution-count">{f.execution_count}</dd>
          </div>
          <div>
            <dt>Errors</dt>
            <dd data-testid="error-count">{f.error_count}</dd>
          </div>
          <div>
            <dt>Latency p50 / p95 / p99</dt>
            <dd>
              {f.p50_execution_time_ms} / {f.p95_execution_time_ms} / {f.p99_execution_time_ms} ms
            </dd>
          </div>
          <div>
            <dt>Memory avg / peak</dt>
            <dd>
              {f.resource_usage.avg_memory_mb} / {f.resource_usage.peak_memory_mb} MB (
              {f.resource_usage.samples} samples)
            </dd>
          </div>
        </dl>
      )}
      {report && (
        <div class="charts">
          <Chart
            title="Executions and errors"
            testid="chart-executions"
            range={range}
            times={times}
            rows={rows}
            series={[
              {
                label: "executions",
                color: "#2563eb",
                points: false, // a value every bucket: a line is enough
                values: points.map((p) => p?.execution_count ?? 0), // no point: no call
              },
              {
                label: "errors",
                color: "#dc2626",
                points: false,
                values: points.map((p) => p?.error_count ?? 0),
              },
            ]}
          />
          <Chart
            title="Latency (ms)"
            testid="chart-latency"
            range={range}
            times={times}
            rows={rows}
            empty="No calls in this range."
            series={[
              { label: "p50", color: "#059669", values: of((p) => p.p50_execution_time_ms) },
              { label: "p95", color: "#d97706", values: of((p) => p.p95_execution_time_ms) },
              { label: "p99", color: "#dc2626", values: of((p) => p.p99_execution_time_ms) },
              {
                label: "avg",
                color: "#6b7280",
                dash: [4, 4],
                values: of((p) => (p.execution_count ? p.avg_execution_time_ms : null)),
              },
            ]}
          />
          <Chart
            title="Memory (MB)"
            testid="chart-memory"
            range={range}
            times={times}
            rows={rows}
            empty="No memory samples in this range (taken of worker processes only, not of in-process plugins)."
            series={[
              { label: "avg MB", color: "#7c3aed", values: of((p) => p.avg_memory_mb) },
              { label: "peak MB", color: "#db2777", values: of((p) => p.peak_memory_mb) },
            ]}
          />
        </div>
      )}
    </section>
  );
}
