import { useState } from "preact/hooks";
import { api, holds } from "./api";
import { ErrorBox } from "./common";

interface Found {
  name: string;
  source: string;
  version: string | null;
  type: string | null;
  description: string | null;
  location: string | null;
  class_path: string | null;
  installed: boolean;
  compatible: boolean;
  incompatible_reason: string | null;
  conflicts: string[];
  already_registered: boolean;
  auto_registered: boolean;
  plugin_id: string | null;
}

interface Result {
  discovered_plugins: Found[];
  discovery_summary: Record<string, number>;
  errors: { source: string; location: string | null; message: string }[];
}

const SOURCES = ["filesystem", "pypi", "git"];
const NEEDS_WRITE = "Discovery needs a token with the scope plugins:write";
const NEEDS_ADMIN = "Registering needs a token with the scope plugins:admin";
const NEEDS_ADMIN_AUTO =
  "Registering what is found needs a token with the scope plugins:admin";

export function Discover() {
  const [sources, setSources] = useState<Set<string>>(new Set(["filesystem", "pypi"]));
  const [result, setResult] = useState<Result | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [autoRegister, setAutoRegister] = useState(false);
  const [registered, setRegistered] = useState<Record<string, string>>({});
  const canDiscover = holds("plugins:write");
  const canRegister = holds("plugins:admin");

  async function run(e: Event) {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const q = new URLSearchParams({ sources: [...sources].join(",") });
      if (autoRegister && canRegister) q.set("auto_register", "true");
      setResult((await api<Result>("GET", `/v1/plugins/discover?${q}`)).data);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  }

  async function register(p: Found) {
    setError(null);
    try {
      const body: Record<string, unknown> = { class_path: p.class_path };
      if (p.name) body.name = p.name;
      if (p.type) body.type = p.type;
      if (p.version) body.version = p.version;
      const r = await api<{ id: string; status: string }>("POST", "/v1/plugins", body);
      setRegistered({ ...registered, [`${p.source}:${p.name}`]: r.data.id });
    } catch (err) {
      setError(err);
    }
  }

  return (
    <section aria-labelledby="discover-title">
      <h1 id="discover-title">Discover</h1>
      {!canDiscover && (
        <p class="readonly" role="note">
          {NEEDS_WRITE}.
        </p>
      )}
      <form onSubmit={run} aria-label="Discovery">
        <fieldset>
          <legend>Sources</legend>
          {SOURCES.map((s) => (
            <label class="inline">
              <input
                type="checkbox"
                name="sources"
                value={s}
                checked={sources.has(s)}
                onChange={(e) => {
                  const next = new Set(sources);
                  if ((e.target as HTMLInputElement).checked) next.add(s);
                  else next.delete(s);
                  setSources(next);
                }}
              />
              {s}
            </label>
          ))}
        </fieldset>
        <label class="inline switch" title={canRegister ? undefined : NEEDS_ADMIN_AUTO}>
          <input
            type="checkbox"
            name="auto_register"
            checked={autoRegister && canRegister}
            disabled={!canRegister}
            title={canRegister ? undefined : NEEDS_ADMIN_AUTO}
            onChange={(e) => setAutoRegister((e.target as HTMLInputElement).checked)}
          />
          Register every compatible, installed plugin found (auto_register)
        </label>
        <button
          type="submit"
          disabled={busy || !canDiscover || sources.size === 0}
          title={canDiscover ? undefined : NEEDS_WRITE}
        >
          Run discovery
        </button>
      </form>
      <ErrorBox error={error} />
      {result && (
        <>
          <p data-testid="discovery-summary">
            {result.discovery_summary.total_discovered} found,{" "}
            {result.discovery_summary.compatible_plugins} compatible,{" "}
            {result.discovery_summary.incompatible_plugins} incompatible,{" "}
            <span data-testid="auto-registered">
              {result.discovery_summary.auto_registered ?? 0}
            </span>{" "}
            registered now
          </p>
          {result.errors.length > 0 && (
            <div class="error" role="alert">
              Could not read:
              <ul data-testid="discovery-errors">
                {result.errors.map((e) => (
                  <li>
                    {e.source}
                    {e.location ? ` (${e.location})` : ""}: {e.message}
                  </li>
                ))}
              </ul>
            </div>
          )}
          <table class="plugins" aria-label="Discovered plugins">
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Source</th>
                <th scope="col">Version</th>
                <th scope="col">Type</th>
                <th scope="col">Where</th>
                <th scope="col">State</th>
              </tr>
            </thead>
            <tbody>
              {result.discovered_plugins.map((p) => {
                const id = registered[`${p.source}:${p.name}`] ?? p.plugin_id;
                return (
                  <tr data-discovered={p.name}>
                    <td>{p.name}</td>
                    <td>{p.source}</td>
                    <td>{p.version ?? ""}</td>
                    <td>{p.type ?? ""}</td>
                    <td class="description">{p.location}</td>
                    <td>
                      {!p.compatible && (
                        <span class="badge badge-error" title={p.incompatible_reason ?? ""}>
                          incompatible
                        </span>
                      )}
                      {!p.compatible && p.incompatible_reason && (
                        <div class="description">{p.incompatible_reason}</div>
                      )}
                      {p.conflicts.length > 0 && (
                        <div class="description">conflicts: {p.conflicts.join("; ")}</div>
                      )}
                      {p.auto_registered && (
                        <span class="badge badge-registered" data-testid="auto-registered-mark">
                          registered now
                        </span>
                      )}{" "}
                      {id ? (
                        <a href={`#/plugins/${encodeURIComponent(id)}`}>registered as {id}</a>
                      ) : (
                        p.compatible &&
                        p.installed &&
                        p.class_path && (
                          <button
                            type="button"
                            disabled={!canRegister}
                            title={canRegister ? undefined : NEEDS_ADMIN}
                            aria-label={`Register ${p.name}`}
                            onClick={() => register(p)}
                          >
                            Register
                          </button>
                        )
                      )}
                      {!p.installed && <span class="description">not installed</span>}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </>
      )}
    </section>
  );
}
