/** Bad bundles give one clear BundleError each, in the app's terms. */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";

import { BundleError, MANIFEST, readBundle, SCHEMA, SCHEMA_PATH, versionRange } from "../src/node.js";
import { BUNDLE, SKIP_BUNDLE } from "./env.js";

const root = mkdtempSync(join(tmpdir(), "edgedec-engine-"));
after(() => rmSync(root, { recursive: true, force: true }));

/** readBundle(path) throws a one-line BundleError matching `pattern`. */
function rejects(path: string, pattern: RegExp): string {
  let message = "";
  assert.throws(() => readBundle(path), (e: unknown) => {
    assert.ok(e instanceof BundleError, `not a BundleError: ${e}`);
    message = e.message;
    return true;
  });
  assert.match(message, pattern);
  assert.ok(!message.includes("\n"), `more than one line: ${message}`);
  return message;
}

test("the schema is edgedec's own file, and gives the version range", () => {
  assert.match(SCHEMA_PATH, /edgedec[/\\]bundle\.schema\.json$/);
  assert.deepEqual(SCHEMA, JSON.parse(readFileSync(SCHEMA_PATH, "utf8")), "src/schema.ts is out of date: npm run build");
  const [lo, hi] = versionRange();
  assert.ok(Number.isInteger(lo) && Number.isInteger(hi) && lo <= hi);
});

test("a missing bundle folder says how to push one", () => {
  const p = join(root, "nowhere");
  const msg = rejects(p, /^no bundle at .*nowhere; push one with adb push /);
  assert.ok(msg.includes(p));
});

test("a folder without a manifest is not a bundle", () => {
  const p = join(root, "empty");
  mkdirSync(p);
  rejects(p, /is not an edgedec bundle \(no edgedec\.json\).*adb push/);
});

test("a corrupt manifest", () => {
  const p = join(root, "corrupt");
  mkdirSync(p);
  writeFileSync(join(p, MANIFEST), "{ not json");
  rejects(p, /edgedec\.json is corrupt .*export the bundle again/);
});

describe("manifests changed from a real one", { skip: SKIP_BUNDLE }, () => {
  const good = SKIP_BUNDLE ? {} : JSON.parse(readFileSync(join(BUNDLE!, MANIFEST), "utf8"));

  /** A bundle whose graphs are the real bundle's (links) and whose manifest is `change(copy of the real)`. */
  function variant(name: string, change: (m: Record<string, any>) => void): string {
    const p = join(root, name);
    mkdirSync(p);
    const m = structuredClone(good);
    change(m);
    writeFileSync(join(p, MANIFEST), JSON.stringify(m));
    for (const f of Object.keys(good.files ?? {})) symlinkSync(join(BUNDLE!, f), join(p, f));
    return p;
  }

  test("the real bundle passes", () => {
    const b = readBundle(BUNDLE!);
    assert.equal(b.config.n_layers, b.segments[b.segments.length - 1].end);
    assert.equal(readBundle(variant("same", () => {})).manifest.version, good.version);
  });

  test("a manifest that fails the schema names the field", () => {
    rejects(variant("badtype", (m) => { m.config.n_layers = "30"; }),
      /does not match the bundle schema: 'config\.n_layers' must be integer; export the bundle again/);
    rejects(variant("nohead", (m) => { delete m.head; }),
      /does not match the bundle schema: the manifest must have required property 'head'/);
    rejects(variant("badsegment", (m) => { m.segments[1] = { start: 6 }; }),
      /does not match the bundle schema: 'segments\.1' must have required property 'end'/);
  });

  test("another format version says which side to update", () => {
    const [lo, hi] = versionRange();
    rejects(variant("newer", (m) => { m.version = hi + 1; }),
      new RegExp(`is bundle format version ${hi + 1}, newer than this app reads \\(${lo}\\.\\.${hi}\\); update the app`));
    rejects(variant("older", (m) => { m.version = lo - 1; }),
      new RegExp(`is bundle format version ${lo - 1}, older than this app reads \\(${lo}\\.\\.${hi}\\); export it again`));
    rejects(variant("strversion", (m) => { m.version = "1"; }), /'version' should be an integer, got "1"/);
  });

  test("another format", () => {
    rejects(variant("format", (m) => { m.format = "gguf"; }), /has format "gguf", not edgedec-bundle/);
  });

  test("segments that do not cover the layers", () => {
    rejects(variant("gap", (m) => { m.segments[m.segments.length - 1].end -= 1; }),
            new RegExp(`the segments do not cover layers 0\\.\\.${good.config.n_layers} in order`));
  });

  test("a missing or half-copied graph", () => {
    const p = variant("nograph", () => {});
    rmSync(join(p, good.segments[0].file));
    rejects(p, new RegExp(`is missing ${good.segments[0].file}; push the whole bundle folder again`));
    const q = variant("halfcopy", () => {});
    // the head's weights: head.onnx.data, or the whole head.ort of a mobile bundle
    const name = good.files?.[good.head.file + ".data"] ? good.head.file + ".data" : good.head.file;
    rmSync(join(q, name));
    writeFileSync(join(q, name), "truncated");
    rejects(q, new RegExp(`${name.split(".").join("\\.")} is 9 bytes, the manifest says \\d+ bytes; the copy is incomplete`));
  });
});
