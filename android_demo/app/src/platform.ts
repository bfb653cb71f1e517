/**
 * The engine's platform on the phone (engine/src/platform.ts): onnxruntime-react-native, and the bundle
 * folder read once through react-native-fs (engine/src/preload.ts: the same code the Node tests run on
 * node:fs/promises), since react-native-fs only reads asynchronously.
 */
import { Engine, preloadPlatform, type AsyncFiles, type Platform } from "edgedec-engine";
import { InferenceSession, Tensor } from "onnxruntime-react-native";
import * as RNFS from "react-native-fs";

import { findBundle } from "./bundleLocation";

const files: AsyncFiles = {
  stat: async (path) => {
    if (!(await RNFS.exists(path))) return null;
    const s = await RNFS.stat(path);
    return { size: s.size, isDirectory: s.isDirectory() };
  },
  list: async (path) =>
    (await RNFS.readDir(path)).map((e) => ({ name: e.name, size: e.size, isDirectory: e.isDirectory() })),
  readText: (path) => RNFS.readFile(path, "utf8"),
};

export function devicePlatform(folder: string): Promise<Platform> {
  return preloadPlatform(folder, files, { InferenceSession, Tensor });
}

/** Find the pushed bundle and load it (throws the engine's BundleError when there is none, or it is broken). */
export async function loadEngine(): Promise<Engine> {
  const folder = await findBundle();
  const platform = await devicePlatform(folder);
  return Engine.load(folder, { platform });
}
