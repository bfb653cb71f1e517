/**
 * The bundle: a folder with the manifest `edgedec.json` and the files it names (edgedec/bundle.py).
 *
 *     edgedec.json        the manifest, checked against edgedec/bundle.schema.json (draft 2020-12)
 *     tokenizer.json      Hugging Face tokenizers file
 *     layers_A_B.onnx     + .data: the graph for layers [A, B) (the first also embeds tokens)
 *     head.onnx           + .data: final norm + LM head
 *
 * `readBundle` checks the folder, the manifest's format and version, the schema, and that every graph
 * is there, and throws one BundleError whose message says what to do, in the app's terms (adb push).
 *
 * The schema is edgedec/bundle.schema.json, compiled into src/schema.ts with its validator when the engine is
 * built (scripts/schema.mjs), never edited here, so it cannot drift from what `edgedec export` writes.
 * Files are read through the platform (platform.ts): node:fs under Node, react-native-fs in the app.
 */
import { getPlatform, type Platform } from "./platform.js";
import { schema as bundleSchema, validate as validateManifest } from "./schema.js";

export const MANIFEST = "edgedec.json";
export const FORMAT = "edgedec-bundle";

/** A bundle is missing, incomplete, or of a format or version this engine does not read. */
export class BundleError extends Error {
  override name = "BundleError";
}

export interface LlamaConfig {
  n_layers: number;
  hidden: number;
  n_heads: number;
  n_kv_heads: number;
  head_dim: number;
  vocab: number;
  context: number;
  [key: string]: unknown;
}

export interface Segment {
  start: number;
  end: number;
  file: string;
}

export interface TokenizerInfo {
  file: string;
  bos_id: number | null;
  eos_ids: number[];
  add_bos: boolean;
}

export interface FileEntry {
  bytes: number;
  sha256: string;
}

/** The fields of edgedec.json this engine uses (the schema checks all of them). */
export interface Manifest {
  format: string;
  version: number;
  model: { name: string; source: string };
  config: LlamaConfig;
  segments: Segment[];
  head: { file: string };
  tokenizer: TokenizerInfo;
  chat_template: string | null;
  files?: Record<string, FileEntry>;
  mobile?: { cache: string; prefill_chunk?: number; fused?: boolean } | null;   // set for `edgedec export --target mobile` bundles
  [key: string]: unknown;
}

export class Bundle {
  constructor(readonly path: string, readonly manifest: Manifest, readonly platform: Platform = getPlatform()) {}

  get config(): LlamaConfig {
    return this.manifest.config;
  }

  get segments(): Segment[] {
    return this.manifest.segments;
  }

  file(name: string): string {
    return this.platform.join(this.path, name);
  }
}

interface Schema {
  properties: { version: { minimum: number; maximum: number } };
  [key: string]: unknown;
}

type Validator = ((data: unknown) => boolean) & {
  errors?: { instancePath: string; message?: string; params?: Record<string, unknown> }[] | null;
};

/** edgedec/bundle.schema.json, as the engine was built with. */
export const SCHEMA = bundleSchema as Schema;
const validate = validateManifest as Validator;

/** The bundle versions this engine reads: the schema's version range. */
export function versionRange(): [number, number] {
  const v = SCHEMA.properties.version;
  return [v.minimum, v.maximum];
}

function show(value: unknown): string {
  const s = JSON.stringify(value);
  return s === undefined ? String(value) : s.length > 60 ? s.slice(0, 57) + "..." : s;
}

/** Read and check the bundle at `path`; BundleError names the first problem and its fix. */
export function readBundle(path: string, platform: Platform = getPlatform()): Bundle {
  const p = platform.resolve(path);
  const info = platform.stat(p);
  if (info === null) {
    throw new BundleError(`no bundle at ${p}; push one with adb push BUNDLE_FOLDER ${p} ` +
      "(a folder made by 'edgedec export')");
  }
  const manifestPath = platform.join(p, MANIFEST);
  if (!info.isDirectory || platform.stat(manifestPath) === null) {
    throw new BundleError(`${p} is not an edgedec bundle (no ${MANIFEST}); push a whole folder made by ` +
      `'edgedec export' with adb push BUNDLE_FOLDER ${p}`);
  }
  let data: unknown;
  try {
    data = JSON.parse(platform.readText(manifestPath));
  } catch (e) {
    throw new BundleError(`${manifestPath} is corrupt (${(e as Error).message}); export the bundle again ` +
      "and push it with adb push");
  }
  const d = (typeof data === "object" && data !== null ? data : {}) as Record<string, unknown>;
  if (d.format !== FORMAT) {
    throw new BundleError(`${p} has format ${show(d.format)}, not ${FORMAT}; push a folder made by ` +
      "'edgedec export'");
  }
  const [lo, hi] = versionRange();
  const version = d.version;
  if (typeof version !== "number" || !Number.isInteger(version)) {
    throw new BundleError(`${manifestPath}: 'version' should be an integer, got ${show(version)}; ` +
      "export the bundle again");
  }
  if (version > hi) {
    throw new BundleError(`${p} is bundle format version ${version}, newer than this app reads ` +
      `(${lo}..${hi}); update the app, or export the bundle with the edgedec version the app was built with`);
  }
  if (version < lo) {
    throw new BundleError(`${p} is bundle format version ${version}, older than this app reads ` +
      `(${lo}..${hi}); export it again with a current edgedec and push it with adb push`);
  }
  if (!validate(data)) {
    const e = validate.errors?.[0];
    const where = e?.instancePath ? `'${e.instancePath.slice(1).replaceAll("/", ".")}'` : "the manifest";
    throw new BundleError(`${manifestPath} does not match the bundle schema: ${where} ${e?.message ?? "is invalid"}; ` +
      "export the bundle again and push it with adb push");
  }
  const m = data as Manifest;
  const segs = m.segments;
  if (!segs.length || segs[0].start !== 0 || segs[segs.length - 1].end !== m.config.n_layers ||
      segs.some((s, i) => i > 0 && segs[i - 1].end !== s.start)) {
    throw new BundleError(`${p}: the segments do not cover layers 0..${m.config.n_layers} in order; ` +
      "export the bundle again");
  }
  const needed = [...segs.map((s) => s.file), m.head.file, m.tokenizer.file];
  for (const name of needed) {
    const f = platform.join(p, name);
    if (platform.stat(f) === null) {
      throw new BundleError(`${p} is missing ${name}; push the whole bundle folder again with adb push`);
    }
    for (const g of [f, f + ".data"]) {    // a graph's weights (external data), when the manifest lists them
      const want = m.files?.[g.slice(p.length + 1)]?.bytes;
      const size = want === undefined ? undefined : platform.stat(g)?.size;
      if (want !== undefined && size !== want) {
        const got = size === undefined ? "missing" : `${size} bytes`;
        throw new BundleError(`${g} is ${got}, the manifest says ${want} bytes; the copy is incomplete, ` +
          "push the bundle folder again with adb push");
      }
    }
  }
  return new Bundle(p, m, platform);
}
