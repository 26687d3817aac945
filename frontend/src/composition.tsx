import { useEffect, useState } from "preact/hooks";
import { api, holds } from "./api";
import { ErrorBox } from "./common";

interface Summary {
  id: string;
  name: string;
  version: string;
  type: string;
}

interface Explanation {
  constraint: string;
  kind?: string;
}

interface Conflict {
  type: string;
  plugins: string[];
  message: string;
  resolution_options: string[];
  explanation?: Explanation[];
}

interface Result {
  composition_valid: boolean;
  conflicts: Conflict[];
  warnings: { type: string; message: string; severity: string; plugins: string[] }[];
  synergies: { plugins: string[]; integration_points: string[]; benefits: string[] }[];
  recommendations: string[];
  resolved: { name: string; version: string; id?: string; added_by_resolver?: boolean }[];
}

const NEEDS_WRITE = "Validating a composition needs a token with the scope plugins:write";

export function Composition() {
  const [plugins, setPlugins] = useState<Summary[]>([]);
  const [chosen, setChosen] = useState<Record<string, string>>({}); // name -> version ("" any)
  const [result, setResult] = useState<Result | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const canValidate = holds("plugins:write");

  useEffect(() => {
    // the first 100 plugins to pick from (a composition may also name any plugin by hand)
    api<Summary[]>("GET", "/v1/plugins?limit=100")
      .then((a) => setPlugins(a.data))
      .catch(setError);
  }, []);
  const names = [...new Set(plugins.map((p) => p.name))];

  async function validate(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = {
        plugins: Object.entries(chosen).map(([name, version]) =>
          version ? { name, version } : { name },
        ),
      };
      setResult((await api<Result>("POST", "/v1/plugins/validate-composition", body)).data);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  return (
    <section aria-labelledby="composition-title">
      <h1 id="composition-title">Composition</h1>
      {!canValidate && (
        <p class="readonly" role="note">
          {NEEDS_WRITE}.
        </p>
      )}
      <form onSubmit={validate} aria-label="Composition">
        <fieldset>
          <legend>Plugins and versions</legend>
          {names.map((name) => {
            const versions = plugins.filter((p) => p.name === name).map((p) => p.version);
            const on = name in chosen;
            return (
              <div class="pick">
                <label class="inline">
                  <input
                    type="checkbox"
                    name="plugins"
                    value={name}
                    checked={on}
                    onChange={(e) => {
                      const next = { ...chosen };
                      if ((e.target as HTMLInputElement).checked) next[name] = "";
                      else delete next[name];
                      setChosen(next);
                    }}
                  />
                  {name}
                </label>
                <label class="inline">
                  version of {name}
                  <select
                    name={`version-${name}`}
                    disabled={!on}
                    value={chosen[name] ?? ""}
                    onChange={(e) =>
                      setChosen({ ...chosen, [name]: (e.target as HTMLSelectElement).value })
                    }
                  >
                    <option value="">any</option>
                    {versions.map((v) => (
                      <option value={v}>{v}</option>
                    ))}
                  </select>
                </label>
              </div>
            );
          })}
        </fieldset>
        <button
          type="submit"
          disabled={busy || !canValidate || Object.keys(chosen).length === 0}
          title={canValidate ? undefined : NEEDS_WRITE}
        >
          Validate composition
        </button>
      </form>
      <ErrorBox error={error} />
      {result && (
        <div data-testid="composition-result">
          <p
            class={result.composition_valid ? "notice" : "error"}
            data-testid="composition-valid"
            data-valid={String(result.composition_valid)}
          >
            {result.composition_valid ? "This composition is valid" : "This composition is not valid"}
          </p>
          {result.conflicts.length > 0 && <h2>Conflicts</h2>}
          {result.conflicts.map((c) => (
            <div class="error" data-testid="composition-conflict" data-type={c.type}>
              <strong>{c.type}</strong>: {c.message}
              {c.explanation && c.explanation.length > 0 && (
                <ul>
                  {c.explanation.map((x) => (
                    <li>{x.constraint}</li>
                  ))}
                </ul>
              )}
              {c.resolution_options.length > 0 && (
                <div>
                  Resolution options:
                  <ul>
                    {c.resolution_options.map((o) => (
                      <li>{o}</li>
                    ))}
                  </ul>
                </div>
              )}
            </div>
          ))}
          {result.warnings.length > 0 && <h2>Warnings</h2>}
          <ul>
            {result.warnings.map((w) => (
              <li data-testid="composition-warning">
                [{w.severity}] {w.message}
              </li>
            ))}
          </ul>
          {result.synergies.length > 0 && <h2>Synergies</h2>}
          <ul>
            {result.synergies.map((s) => (
              <li data-testid="composition-synergy">
                {s.plugins.join(" + ")}: {s.benefits.join("; ")}
              </li>
            ))}
          </ul>
          {result.recommendations.length > 0 && <h2>Recommendations</h2>}
          <ul>
            {result.recommendations.map((r) => (
              <li data-testid="composition-recommendation">{r}</li>
            ))}
          </ul>
          {result.resolved.length > 0 && (
            <>
              <h2>Resolved set</h2>
              <ul>
                {result.resolved.map((r) => (
                  <li>
                    {r.name} {r.version}
                    {r.added_by_resolver ? " (added by the resolver)" : ""}
                  </li>
                ))}
              </ul>
            </>
          )}
        </div>
      )}
    </section>
  );
}
