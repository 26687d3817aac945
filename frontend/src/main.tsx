import { render } from "preact";
import { useEffect, useState } from "preact/hooks";
import { getToken } from "./api";
import { SignIn } from "./signin";
import { Catalogue } from "./catalogue";
import { PluginPage } from "./plugin";
import { Discover } from "./discover";
import { Composition } from "./composition";
import "./style.css";

function useHash(): string {
  const [hash, setHash] = useState(window.location.hash);
  useEffect(() => {
    const on = () => setHash(window.location.hash);
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return hash;
}

function App() {
  const hash = useHash();
  const token = getToken();
  if (!token || hash === "#/signin") {
    if (hash !== "#/signin") window.location.hash = "#/signin";
    return <SignIn />;
  }
  const plugin = /^#\/plugins\/([^/?]+)/.exec(hash);
  return (
    <>
      <header class="top">
        <a href="#/" class="brand">mlx-platform</a>
        <nav aria-label="Main">
          <a href="#/">Catalogue</a>
          <a href="#/discover">Discover</a>
          <a href="#/composition">Composition</a>
        </nav>
        <button
          type="button"
          class="link"
          onClick={() => {
            sessionStorage.clear();
            window.location.hash = "#/signin";
          }}
        >
          Sign out
        </button>
      </header>
      <main>
        {plugin ? (
          <PluginPage id={decodeURIComponent(plugin[1])} />
        ) : hash === "#/discover" ? (
          <Discover />
        ) : hash === "#/composition" ? (
          <Composition />
        ) : (
          <Catalogue />
        )}
      </main>
    </>
  );
}

render(<App />, document.getElementById("app")!);
