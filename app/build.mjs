// Builds the chat app into dist/ (committed, embedded in the starling binary by rust-embed):
// src/main.ts and the SDK source it imports (../sdk/js/src) bundled by esbuild into one
// ES module, dist/app.js; src/index.html and src/style.css copied. The output depends only on
// the sources (no timestamps, no absolute paths), so tools/test.sh can rebuild and require
// `git diff --exit-code app/dist`.
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });
await esbuild.build({
  entryPoints: [join(here, "src/main.ts")],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2020",
  outfile: join(dist, "app.js"),
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
  absWorkingDir: here,
});
for (const f of ["index.html", "style.css"]) copyFileSync(join(here, "src", f), join(dist, f));
