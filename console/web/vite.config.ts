import { defineConfig } from 'vite';

// The bundle goes to ../dist, which console.go embeds; the scheduler serves
// it at / and /assets/. Hashed file names let /assets/ be cached forever
// while index.html is revalidated on each load.
export default defineConfig({
  base: '/',
  build: {
    outDir: '../dist',
    emptyOutDir: true,
    assetsDir: 'assets',
    // No inline scripts or styles: the Content-Security-Policy the server
    // sends allows 'self' only.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
    sourcemap: false,
    target: 'es2022',
  },
});
