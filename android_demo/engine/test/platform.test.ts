/** The engine without Node: the modules the app bundles import nothing of Node's, and a preloaded platform
 * (how the app reads a bundle, there through react-native-fs) reads and runs a bundle as node:fs does. */
import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { BundleError, Engine, nodePlatform, preloadPlatform, readBundle, type AsyncFiles } from "../src/node.js";
import { BUNDLE, REFERENCE, SKIP } from "./env.js";

test("only node.js imports Node's modules or onnxruntime-node", () => {
  const src = join(dirname(fileURLToPath(import.meta.url)), "..", "src");
  const modules = readdirSync(src).filter((f) => f.endsWith(".js") && f !== "node.js");
  assert.ok(modules.includes("engine.js") && modules.includes("bundle.js"));
  for (const f of modules) {
    const code = readFileSync(join(src, f), "utf8");
    assert.doesNotMatch(code, /from\s+["'](node:|onnxruntime-node)|require\(/, `${f} imports a Node module`);
  }
});

/** node:fs/promises as the asynchronous file access the app has. */
const nodeFiles: AsyncFiles = {
  stat: async (p) => {
    const s = await stat(p).catch(() => null);
    return s && { size: s.size, isDirectory: s.isDirectory() };
  },
  list: async (p) => Promise.all((await readdir(p)).map(async (name) => {
    const s = await stat(join(p, name));
    return { name, size: s.size, isDirectory: s.isDirectory() };
  })),
  readText: (p) => readFile(p, "utf8"),
};

test("a preloaded platform gives readBundle's errors for a missing folder", async () => {
  const p = await preloadPlatform("/nonexistent/edgedec", nodeFiles, nodePlatform.ort);
  assert.throws(() => readBundle("/nonexistent/edgedec", p),
    (e: unknown) => e instanceof BundleError && /^no bundle at \/nonexistent\/edgedec; push one/.test(e.message));
});

describe("a preloaded platform", { skip: SKIP }, () => {
  test("reads the bundle as node:fs does, and decodes the same tokens", async () => {
    const p = await preloadPlatform(BUNDLE!, nodeFiles, nodePlatform.ort);
    assert.deepEqual(readBundle(BUNDLE!, p).manifest, readBundle(BUNDLE!).manifest);
    const ids = REFERENCE!.templated_ids[0];
    const tokens: number[][] = [];
    for (const platform of [p, nodePlatform]) {
      const engine = await Engine.load(BUNDLE!, { threads: 2, platform });
      try {
        tokens.push((await engine.session().generate(ids, { maxTokens: 8 })).tokens);
      } finally {
        await engine.release();
      }
    }
    assert.equal(tokens[0].length, 8);
    assert.deepEqual(tokens[0], tokens[1]);
  });
});
