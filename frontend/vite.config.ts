import { defineConfig, type Plugin } from "vite";
import preact from "@preact/preset-vite";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";

// What the build is made from: tests/integration/test_ui_serving.py computes the same digest
// and fails when the committed build is older than the source (run `make ui`).
const SOURCES = ["index.html", "package.json", "package-lock.json", "tsconfig.json", "vite.config.ts", "src"];

function walk(path: string): string[] {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path).flatMap((name) => walk(join(path, name)));
}

function sourceDigest(root: string): string {
  const files = SOURCES.flatMap((s) => walk(join(root, s)))
    .map((f) => relative(root, f).split(sep).join("/"))
    .sort();
  const h = createHash("sha256");
  for (const f of files) {
    const body = createHash("sha256").update(readFileSync(join(root, f))).digest("hex");
    h.update(`${f}\n${body}\n`);
  }
  return h.digest("hex");
}

function sourceDigestFile(): Plugin {
  return {
    name: "mlx-source-digest",
    generateBundle() {
      this.emitFile({
        type: "asset",
        fileName: "source-digest.txt",
        source: sourceDigest(__dirname) + "\n",
      });
    },
  };
}

// Built into the Python package: `make ui` writes src/mlx_platform/server/ui_dist/, served at
// /ui/ by the service. `base: "./"`: every asset URL is relative, so the dashboard also works
// behind a reverse proxy that adds a path prefix.
export default defineConfig({
  plugins: [preact(), sourceDigestFile()],
  base: "./",
  build: {
    outDir: "../src/mlx_platform/server/ui_dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
  },
});
