/**
 * The engine under Node: everything index.ts exports, with node:fs and onnxruntime-node registered as the
 * platform (the package's main entry, and what the tests and bench import).
 */
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import { InferenceSession, Tensor } from "onnxruntime-node";

import { setPlatform, type Platform } from "./platform.js";
import { SCHEMA_FILE } from "./schema.js";

export * from "./index.js";

export const nodePlatform: Platform = {
  ort: { InferenceSession, Tensor },
  readText: (path) => readFileSync(path, "utf8"),
  stat: (path) => {
    if (!existsSync(path)) return null;
    const s = statSync(path);
    return { size: s.size, isDirectory: s.isDirectory() };
  },
  join,
  resolve,
};

setPlatform(nodePlatform);

/** The package root: the nearest folder above this module with a package.json. */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error(`no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
  return dir;
}

/** The file the build compiled the bundle schema from: edgedec/bundle.schema.json of this repository. */
export const SCHEMA_PATH = resolve(packageRoot(), "..", "..", SCHEMA_FILE);
