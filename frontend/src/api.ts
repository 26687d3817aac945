// Every request the dashboard makes: documented endpoints of /v1, with the bearer token the
// user typed (sessionStorage: this browser tab's session only; never in a URL).

const TOKEN_KEY = "mlx.token";
const SIGNIN_MESSAGE_KEY = "mlx.signin.message";

// The page is served at <prefix>/ui/: the API is one level up, whatever the prefix.
export const API_ROOT = new URL("../", window.location.href.split("#")[0]).href;

export function getToken(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token: string): void {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

export function signOut(message?: string): void {
  sessionStorage.removeItem(TOKEN_KEY);
  if (message) sessionStorage.setItem(SIGNIN_MESSAGE_KEY, message);
  window.location.hash = "#/signin";
}

export function takeSignInMessage(): string | null {
  const m = sessionStorage.getItem(SIGNIN_MESSAGE_KEY);
  sessionStorage.removeItem(SIGNIN_MESSAGE_KEY);
  return m;
}

/** The scopes the token claims (read from its payload, for the controls only: the API
 * decides). Unknown (not a JWT we can read) counts as none. */
export function tokenScopes(token: string | null): string[] {
  if (!token) return [];
  try {
    const part = token.split(".")[1];
    const json = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(json);
    const scopes: string[] = [];
    if (Array.isArray(claims.scopes)) scopes.push(...claims.scopes);
    if (typeof claims.scope === "string") scopes.push(...claims.scope.split(" "));
    return scopes;
  } catch {
    return [];
  }
}

const IMPLIES: Record<string, string[]> = {
  "plugins:admin": ["plugins:admin", "plugins:write", "plugins:read"],
  "plugins:write": ["plugins:write", "plugins:read"],
  "plugins:read": ["plugins:read"],
};

export function holds(scope: string): boolean {
  return tokenScopes(getToken()).some((s) => (IMPLIES[s] ?? [s]).includes(scope));
}

export class ApiError extends Error {
  constructor(
    public status: number,
    public code: string,
    message: string,
    public details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

export interface Pagination {
  page: number;
  limit: number;
  total: number;
  has_next: boolean;
  total_is_estimate?: boolean;
}

export interface Answer<T> {
  data: T;
  pagination?: Pagination;
}

export async function api<T>(
  method: string,
  path: string,
  body?: unknown,
): Promise<Answer<T>> {
  const headers: Record<string, string> = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(API_ROOT + path.replace(/^\//, ""), {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let payload: any = null;
  try {
    payload = await r.json();
  } catch {
    payload = null;
  }
  if (!r.ok || !payload || payload.success === false) {
    const e = payload?.error ?? {};
    const err = new ApiError(
      r.status,
      e.code ?? `HTTP_${r.status}`,
      e.message ?? `The service answered ${r.status}`,
      e.details ?? {},
    );
    if (r.status === 401) signOut(err.message);
    throw err;
  }
  return { data: payload.data as T, pagination: payload.pagination };
}
