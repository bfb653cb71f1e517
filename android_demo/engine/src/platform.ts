/**
 * What the engine needs from where it runs: ONNX Runtime's JS API and read access to a bundle's files.
 *
 *     Node            src/node.ts: node:fs, node:path and onnxruntime-node (registered when node.js loads)
 *     React Native    android_demo/app/src/platform.ts: react-native-fs and onnxruntime-react-native
 *
 * The rest of the engine imports no module of either. The file reads are synchronous because
 * `readBundle` and `new Tokenizer` are; the app's platform reads the bundle folder asynchronously first and
 * then answers from what it read. The graphs themselves are opened by ONNX Runtime, by path.
 */
import type { InferenceSession, Tensor } from "onnxruntime-common";

/** The onnxruntime-common API of onnxruntime-node or onnxruntime-react-native. */
export interface Ort {
  InferenceSession: typeof InferenceSession;
  Tensor: typeof Tensor;
}

export interface FileInfo {
  size: number;           // bytes
  isDirectory: boolean;
}

export interface Platform {
  ort: Ort;
  /** A text file's contents (UTF-8). */
  readText(path: string): string;
  /** What is at `path` (following links), or null when nothing is. */
  stat(path: string): FileInfo | null;
  join(...parts: string[]): string;
  /** An absolute path for `path`. */
  resolve(path: string): string;
}

let current: Platform | null = null;

/** The platform that readBundle, Engine.load and the rest use when none is passed. */
export function setPlatform(platform: Platform): void {
  current = platform;
}

export function getPlatform(): Platform {
  if (current === null) {
    throw new Error("no platform set: under Node import the engine's node.js, in an app call setPlatform " +
      "or pass { platform } to Engine.load");
  }
  return current;
}
