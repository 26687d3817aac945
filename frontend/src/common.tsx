import { ApiError } from "./api";

/** How long typing must pause before a search box's text is asked of the API (not once per
 * keystroke). */
export const TYPING_PAUSE_MS = 250;

/** A search box of the plugin list (its `search` parameter: a name or description), labelled
 * `label`; `onType` gets every keystroke's text. */
export function SearchInput({
  label,
  value,
  onType,
}: {
  label: string;
  value: string;
  onType: (typed: string) => void;
}) {
  return (
    <label>
      {label}
      <input
        type="search"
        name="search"
        maxLength={200}
        value={value}
        placeholder="name or description"
        onInput={(e) => onType((e.target as HTMLInputElement).value)}
      />
    </label>
  );
}

export function StatusBadge({ status }: { status: string }) {
  return <span class={`badge badge-${status}`}>{status}</span>;
}

export function HealthDot({ status }: { status: string | null | undefined }) {
  const s = status ?? "unknown";
  return (
    <span class="health" data-health={s}>
      <span class={`dot dot-${s}`} aria-hidden="true" />
      {s}
    </span>
  );
}

/** An API error as the API words it: code, message, the fields' reasons, and the
 * resolution options when it gives some. */
export function ErrorBox({ error }: { error: unknown }) {
  if (!error) return null;
  if (!(error instanceof ApiError)) {
    return (
      <div class="error" role="alert">
        {String(error)}
      </div>
    );
  }
  const details = { ...error.details };
  const options = details.resolution_options as unknown[] | undefined;
  delete details.resolution_options;
  return (
    <div class="error" role="alert" data-testid="api-error" data-code={error.code}>
      <strong>{error.code}</strong>: {error.message}
      {Object.keys(details).length > 0 && (
        <dl class="details">
          {Object.entries(details).map(([k, v]) => (
            <>
              <dt>{k}</dt>
              <dd>{typeof v === "string" ? v : JSON.stringify(v)}</dd>
            </>
          ))}
        </dl>
      )}
      {options && options.length > 0 && (
        <div>
          Resolution options:
          <ul data-testid="resolution-options">
            {options.map((o) => (
              <li>{typeof o === "string" ? o : JSON.stringify(o)}</li>
            ))}
          </ul>
        </div>
      )}
    </div>
  );
}

export const READ_ONLY_REASON =
  "This token is read-only (scope plugins:read): activating, deactivating, configuring and invoking need plugins:write";
