import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// Built into the Python package: `make ui` writes src/mlx_platform/server/ui_dist/, served at
// /ui/ by the service. `base: "./"`: every asset URL is relative, so the dashboard also works
// behind a reverse proxy that adds a path prefix.
export default defineConfig({
  plugins: [preact()],
  base: "./",
  build: {
    outDir: "../src/mlx_platform/server/ui_dist",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
  },
});
