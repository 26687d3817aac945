import { useState } from "preact/hooks";
import { api, ApiError, clearToken, setToken, takeSignInMessage } from "./api";

export function SignIn() {
  const [message, setMessage] = useState<string | null>(() => takeSignInMessage());
  const [busy, setBusy] = useState(false);

  async function submit(e: Event) {
    e.preventDefault();
    const form = e.currentTarget as HTMLFormElement;
    const token = (new FormData(form).get("token") as string).trim();
    if (!token) {
      setMessage("Paste a bearer token (from `mlx token create`)");
      return;
    }
    setBusy(true);
    setToken(token);
    try {
      // the cheapest documented read: checks the token and its read scope
      await api("GET", "/v1/plugins?limit=1");
      window.location.hash = "#/";
    } catch (err) {
      const m = err instanceof ApiError ? err.message : String(err);
      clearToken();
      takeSignInMessage(); // shown here, now: not again on the next visit
      setMessage(m);
    } finally {
      setBusy(false);
    }
  }

  return (
    <main class="signin">
      <h1>mlx-platform</h1>
      <form onSubmit={submit} aria-label="Sign in">
        <label for="token">Bearer token</label>
        <input
          id="token"
          name="token"
          type="password"
          autocomplete="off"
          required
          placeholder="eyJhbGciOi..."
        />
        <p class="hint">
          A token from <code>mlx token create</code> (or <code>$MLX_HOME/admin.token</code>).
          Kept for this browser session only.
        </p>
        <button type="submit" disabled={busy}>
          Sign in
        </button>
      </form>
      {message && (
        <p class="error" role="alert" data-testid="signin-message">
          {message}
        </p>
      )}
    </main>
  );
}
