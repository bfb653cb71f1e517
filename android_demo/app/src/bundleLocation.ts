/**
 * Where the app looks for a bundle on the phone: /data/local/tmp/edgedec. `adb push` can write there, and an
 * app can read what was pushed without asking for a storage permission (other on-device demos push their
 * models there; not checked on a phone here). Nothing is copied into the app. The README has the push command.
 */
import * as RNFS from "react-native-fs";

export const BUNDLE_ROOT = "/data/local/tmp/edgedec";
const MANIFEST = "edgedec.json";

/**
 * The bundle to load: BUNDLE_ROOT itself when it holds a manifest, else its first subfolder (by name) that
 * does, else BUNDLE_ROOT (the engine's BundleError then says how to push one).
 */
export async function findBundle(): Promise<string> {
  if (await RNFS.exists(`${BUNDLE_ROOT}/${MANIFEST}`)) return BUNDLE_ROOT;
  if (!(await RNFS.exists(BUNDLE_ROOT))) return BUNDLE_ROOT;
  const folders = (await RNFS.readDir(BUNDLE_ROOT)).filter((e) => e.isDirectory());
  folders.sort((a, b) => a.name.localeCompare(b.name));
  for (const f of folders) {
    if (await RNFS.exists(`${BUNDLE_ROOT}/${f.name}/${MANIFEST}`)) return `${BUNDLE_ROOT}/${f.name}`;
  }
  return BUNDLE_ROOT;
}
