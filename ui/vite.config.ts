import { svelte } from "@sveltejs/vite-plugin-svelte";
import { defineConfig } from "vitest/config";

// The app loads these files from inside its binary: no server, no CDN, no
// inline scripts (the Content-Security-Policy in tauri.conf.json forbids them).
export default defineConfig({
  plugins: [svelte()],
  clearScreen: false,
  build: {
    outDir: "dist",
    emptyOutDir: true,
    target: "safari15",
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  // The browser build of Svelte in the tests too (jsdom), as in the app.
  resolve: { conditions: ["browser"] },
  test: {
    environment: "jsdom",
    globals: true,
    include: ["src/**/*.test.ts"],
  },
});
