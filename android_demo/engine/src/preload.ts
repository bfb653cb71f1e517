/**
 * A platform for a file system that only reads asynchronously (react-native-fs in the app): read one bundle
 * folder first, then answer the engine's synchronous calls from what was read. What it reads: the folder's
 * listing (names, sizes) and the text of its .json files (the manifest and the tokenizer); the graphs are
 * opened by ONNX Runtime itself, by path.
 */
import type { FileInfo, Ort, Platform } from "./platform.js";

/** The asynchronous file calls it needs. */
export interface AsyncFiles {
  /** What is at `path` (following links), or null when nothing is. */
  stat(path: string): Promise<FileInfo | null>;
  /** A folder's entries: names and what they are. */
  list(path: string): Promise<(FileInfo & { name: string })[]>;
  readText(path: string): Promise<string>;
}

const join = (...parts: string[]) => parts.join("/").replace(/\/+/g, "/");
const trim = (path: string) => (path.length > 1 ? path.replace(/\/+$/, "") : path);

/** The platform for the bundle at `folder` (an absolute path), read through `files`. */
export async function preloadPlatform(folder: string, files: AsyncFiles, ort: Ort): Promise<Platform> {
  const dir = trim(folder);
  const infos = new Map<string, FileInfo>();
  const texts = new Map<string, string>();
  const top = await files.stat(dir);
  if (top !== null) {
    infos.set(dir, top);
    for (const e of top.isDirectory ? await files.list(dir) : []) {
      const path = join(dir, e.name);
      infos.set(path, { size: e.size, isDirectory: e.isDirectory });
      if (!e.isDirectory && e.name.endsWith(".json")) texts.set(path, await files.readText(path));
    }
  }
  return {
    ort,
    join,
    resolve: trim,
    stat: (path) => infos.get(path) ?? null,
    readText: (path) => {
      const text = texts.get(path);
      if (text === undefined) throw new Error(`${path} was not read with the bundle folder ${dir}`);
      return text;
    },
  };
}
