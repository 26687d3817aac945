import { useEffect, useState } from "preact/hooks";
import { api, holds, Pagination } from "./api";
import { ErrorBox, SearchInput, TYPING_PAUSE_MS } from "./common";

interface Summary {
  id: string;
  name: string;
  version: string;
  type: string;
  description: string | null;
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

interface Pick {
  version: string; // "" any
  versions: string[]; // the registered versions of the name, as far as they were found
}

const NEEDS_WRITE = "Validating a composition needs a token with the scope plugins:write";
const FOUND_LIMIT = 20; // matches per page of the search
const VERSIONS_LIMIT = 100; // the list API's largest page

/** The names of `rows` in their order (the API's ranking), each with its versions. */
function byName(rows: Summary[]): { name: string; type: string; versions: string[] }[] {
  const seen = new Map<string, { name: string; type: string; versions: string[] }>();
  for (const r of rows) {
    const entry = seen.get(r.name);
    if (entry) {
      if (!entry.versions.includes(r.version)) entry.versions.push(r.version);
    } else seen.set(r.name, { name: r.name, type: r.type, versions: [r.version] });
  }
  return [...seen.values()];
}

export function Composition() {
  // the plugins to pick from come from the list API's search, a page at a time: the whole
  // catalogue is reachable however large it is
  const [typed, setTyped] = useState("");
  const [search, setSearch] = useState(""); // what was typed, once typing pauses
  const [found, setFound] = useState<Summary[]>([]);
  const [foundPages, setFoundPages] = useState(1);
  const [pagination, setPagination] = useState<Pagination | null>(null);
  const [searching, setSearching] = useState(false);
  const [chosen, setChosen] = useState<Record<string, Pick>>({});
  const [result, setResult] = useState<Result | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const canValidate = holds("plugins:write");

  useEffect(() => {
    const t = window.setTimeout(() => {
      setSearch(typed.trim());
      setFoundPages(1);
    }, TYPING_PAUSE_MS);
    return () => window.clearTimeout(t);
  }, [typed]);

  useEffect(() => {
    let live = true;
    setSearching(true);
    const q = new URLSearchParams({ page: String(foundPages), limit: String(FOUND_LIMIT) });
    if (search) q.set("search", search);
    api<Summary[]>("GET", `/v1/plugins?${q}`)
      .then((a) => {
        if (!live) return;
        setFound((before) => (foundPages === 1 ? a.data : [...before, ...a.data]));
        setPagination(a.pagination ?? null);
        setSearching(false);
      })
      .catch((e) => {
        if (!live) return;
        setError(e);
        setSearching(false);
      });
    return () => {
      live = false;
    };
  }, [search, foundPages]);

  /** Add `name` with the versions seen so far, then ask the API for all of them: a search
   * for the name ranks the plugins named so first. */
  async function add(name: string, seen: string[]) {
    setChosen((c) => ({ ...c, [name]: { version: "", versions: seen } }));
    try {
      const q = new URLSearchParams({ search: name, limit: String(VERSIONS_LIMIT) });
      const a = await api<Summary[]>("GET", `/v1/plugins?${q}`);
      const versions = byName(a.data.filter((p) => p.name === name))[0]?.versions ?? [];
      setChosen((c) =>
        name in c
          ? { ...c, [name]: { ...c[name], versions: [...new Set([...c[name].versions, ...versions])] } }
          : c,
      );
    } catch (err) {
      setError(err);
    }
  }

  function remove(name: string) {
    setChosen((c) => {
      const next = { ...c };
      delete next[name];
      return next;
    });
  }

  async function validate(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const body = {
        plugins: Object.entries(chosen).map(([name, p]) =>
          p.version ? { name, version: p.version } : { name },
        ),
      };
      setResult((await api<Result>("POST", "/v1/plugins/validate-composition", body)).data);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  const names = byName(found);
  // what was typed and not yet answered: the list shown is an earlier search's
  const pending = searching || typed.trim() !== search;
  const shownCount = found.length;
  const matchText = pagination
    ? pagination.total_is_estimate
      ? `${shownCount.toLocaleString()} shown of more than ${pagination.total.toLocaleString()} plugins`
      : `${shownCount.toLocaleString()} shown of ${pagination.total.toLocaleString()} plugins`
    : "";

  return (
    <section aria-labelledby="composition-title">
      <h1 id="composition-title">Composition</h1>
      {!canValidate && (
        <p class="readonly" role="note">
          {NEEDS_WRITE}.
        </p>
      )}
      <div class="composition">
        <section aria-labelledby="find-title" class="finder">
          <h2 id="find-title">Find plugins</h2>
          <form role="search" aria-label="Find plugins" onSubmit={(e) => e.preventDefault()}>
            <SearchInput label="Search plugins" value={typed} onType={setTyped} />
          </form>
          <p class="hint" data-testid="found-info" aria-live="polite">
            {pending ? "Searching…" : matchText}
          </p>
          <ul class="found" data-testid="found" data-search={search} aria-busy={pending}>
            {names.map((n) => (
              <li data-found={n.name}>
                <button
                  type="button"
                  aria-label={`Add ${n.name}`}
                  disabled={n.name in chosen}
                  onClick={() => add(n.name, n.versions)}
                >
                  {n.name in chosen ? "Added" : "Add"}
                </button>{" "}
                <span class="name">{n.name}</span>{" "}
                <span class="type">
                  {n.type} {n.versions.join(", ")}
                </span>
              </li>
            ))}
          </ul>
          {!pending && names.length === 0 && <p>No plugin matches.</p>}
          {pagination?.has_next && (
            <button
              type="button"
              class="secondary"
              disabled={pending}
              onClick={() => setFoundPages(foundPages + 1)}
            >
              More matches
            </button>
          )}
        </section>
        <form onSubmit={validate} aria-label="Composition" class="chosen">
          <fieldset>
            <legend>Plugins and versions</legend>
            {Object.keys(chosen).length === 0 && (
              <p class="hint">Find plugins and add them to the composition.</p>
            )}
            {Object.entries(chosen).map(([name, p]) => (
              <div class="pick" data-chosen={name}>
                <span class="name">{name}</span>
                <label class="inline">
                  version of {name}
                  <select
                    name={`version-${name}`}
                    value={p.version}
                    onChange={(e) =>
                      setChosen({
                        ...chosen,
                        [name]: { ...p, version: (e.target as HTMLSelectElement).value },
                      })
                    }
                  >
                    <option value="">any</option>
                    {p.versions.map((v) => (
                      <option value={v}>{v}</option>
                    ))}
                  </select>
                </label>
                <button
                  type="button"
                  class="secondary"
                  aria-label={`Remove ${name}`}
                  onClick={() => remove(name)}
                >
                  Remove
                </button>
              </div>
            ))}
          </fieldset>
          <button
            type="submit"
            disabled={busy || !canValidate || Object.keys(chosen).length === 0}
            title={canValidate ? undefined : NEEDS_WRITE}
          >
            Validate composition
          </button>
        </form>
      </div>
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
