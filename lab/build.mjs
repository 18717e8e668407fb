// Build the lab's browser bundle: node build.mjs OUT_DIR
// OUT_DIR/lab/lab.js (the page's code, onnxruntime-web and the tokenizer bundled, minified) and
// OUT_DIR/lab/ort-wasm-simd-threaded.wasm (onnxruntime-web's WebAssembly, copied from node_modules).
import { build } from "esbuild";
import { copyFileSync, mkdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outDir = resolve(process.argv[2] || join(here, "..", "_build", "lab", "site"), "lab");
mkdirSync(outDir, { recursive: true });
await build({
  entryPoints: [join(here, "src", "lab.js")],
  outfile: join(outDir, "lab.js"),
  bundle: true, format: "esm", minify: true, target: "es2020", platform: "browser",
  loader: { ".css": "text" }, legalComments: "linked", logLevel: "warning",
  // keep the build byte-for-byte reproducible
  sourcemap: false, metafile: false,
});
copyFileSync(join(here, "node_modules", "onnxruntime-web", "dist", "ort-wasm-simd-threaded.wasm"),
             join(outDir, "ort-wasm-simd-threaded.wasm"));
console.log(`lab bundle written to ${outDir}`);
