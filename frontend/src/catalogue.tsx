import { useEffect, useState } from "preact/hooks";
import { api, Pagination } from "./api";
import { ErrorBox, HealthDot, SearchInput, StatusBadge, TYPING_PAUSE_MS } from "./common";

interface Summary {
  id: string;
  name: string;
  type: string;
  version: string;
  status: string;
  category: string | null;
  description: string | null;
  health: { status: string | null };
}

const TYPES = ["data_source", "ml_platform", "experiment_tracker", "feature_store"];
const STATUSES = ["registered", "active", "inactive", "error"];
const LIMIT = 20;
export const REFRESH_MS = 5000;

// The orders the list API takes (`sort`): every page in that order, not the shown page
// sorted. Status and health have none: what a row shows of them depends on the replicas.
type SortKey = "name" | "type";
interface Sort {
  key: SortKey;
  descending: boolean;
}

export function Catalogue() {
  const [type, setType] = useState("");
  const [status, setStatus] = useState("");
  const [typed, setTyped] = useState("");
  const [search, setSearch] = useState(""); // what was typed, once typing pauses
  const [page, setPage] = useState(1);
  const [rows, setRows] = useState<Summary[]>([]);
  const [pagination, setPagination] = useState<Pagination | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loaded, setLoaded] = useState(false);
  const [sort, setSort] = useState<Sort | null>(null); // null: the API's default order
  const searching = search.trim() !== "";

  useEffect(() => {
    const t = window.setTimeout(() => {
      setSearch(typed);
      setPage(1);
    }, TYPING_PAUSE_MS);
    return () => window.clearTimeout(t);
  }, [typed]);

  useEffect(() => {
    let live = true;
    const q = new URLSearchParams({ page: String(page), limit: String(LIMIT) });
    if (type) q.set("type", type);
    if (status) q.set("status", status);
    if (searching) q.set("search", search.trim());
    // a search is ranked (name matches first) and takes no sort
    else if (sort) q.set("sort", (sort.descending ? "-" : "") + sort.key);
    const load = () =>
      api<Summary[]>("GET", `/v1/plugins?${q}`)
        .then((a) => {
          if (!live) return;
          setRows(a.data);
          setPagination(a.pagination ?? null);
          setError(null);
          setLoaded(true);
        })
        .catch((e) => live && setError(e));
    load();
    // status badges and health dots follow the service without a reload
    const timer = window.setInterval(load, REFRESH_MS);
    return () => {
      live = false;
      window.clearInterval(timer);
    };
  }, [type, status, search, page, sort]);

  const pages = pagination ? Math.max(1, Math.ceil(pagination.total / LIMIT)) : 1;

  // ascending, then descending, then the default order again; from the first page
  function sortBy(key: SortKey) {
    if (sort?.key !== key) setSort({ key, descending: false });
    else if (!sort.descending) setSort({ key, descending: true });
    else setSort(null);
    setPage(1);
  }

  function header(key: SortKey, label: string) {
    const active = !searching && sort?.key === key;
    const direction = active ? (sort?.descending ? "descending" : "ascending") : undefined;
    return (
      <th scope="col" aria-sort={direction}>
        <button
          type="button"
          class="link sort"
          data-sort={key}
          disabled={searching}
          title={
            searching
              ? "Search results are ranked: clear the search to sort"
              : `Sort every page by ${label.toLowerCase()}`
          }
          onClick={() => sortBy(key)}
        >
          {label}
          <span aria-hidden="true">{direction === "ascending" ? " ▲" : direction ? " ▼" : ""}</span>
        </button>
      </th>
    );
  }

  return (
    <section aria-labelledby="catalogue-title">
      <h1 id="catalogue-title">Catalogue</h1>
      <form class="filters" role="search" onSubmit={(e) => e.preventDefault()}>
        <label>
          Type
          <select
            name="type"
            value={type}
            onChange={(e) => {
              setType((e.target as HTMLSelectElement).value);
              setPage(1);
            }}
          >
            <option value="">any</option>
            {TYPES.map((t) => (
              <option value={t}>{t}</option>
            ))}
          </select>
        </label>
        <label>
          Status
          <select
            name="status"
            value={status}
            onChange={(e) => {
              setStatus((e.target as HTMLSelectElement).value);
              setPage(1);
            }}
          >
            <option value="">any</option>
            {STATUSES.map((t) => (
              <option value={t}>{t}</option>
            ))}
          </select>
        </label>
        <SearchInput label="Search" value={typed} onType={setTyped} />
      </form>
      <ErrorBox error={error} />
      <table class="plugins" aria-label="Plugins" data-loaded={loaded ? "yes" : "no"}>
        <thead>
          <tr>
            {header("name", "Name")}
            {header("type", "Type")}
            <th scope="col">Version</th>
            <th scope="col">Status</th>
            <th scope="col">Health</th>
            <th scope="col">Description</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((p) => (
            <tr data-plugin-id={p.id}>
              <td>
                <a href={`#/plugins/${encodeURIComponent(p.id)}`}>{p.name}</a>
              </td>
              <td>{p.type}</td>
              <td>{p.version}</td>
              <td>
                <StatusBadge status={p.status} />
              </td>
              <td>
                <HealthDot status={p.health?.status} />
              </td>
              <td class="description">{p.description}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {loaded && rows.length === 0 && <p>No plugin matches.</p>}
      <nav class="pager" aria-label="Pages">
        <button type="button" disabled={page <= 1} onClick={() => setPage(page - 1)}>
          Previous page
        </button>
        <span data-testid="page-info">
          {pagination &&
            (pagination.total_is_estimate
              ? `Page ${page}; more than ${pagination.total.toLocaleString()} plugins match`
              : `Page ${page} of ${pages}; ${pagination.total.toLocaleString()} plugins`)}
        </span>
        <button
          type="button"
          disabled={!pagination?.has_next}
          onClick={() => setPage(page + 1)}
        >
          Next page
        </button>
      </nav>
    </section>
  );
}
