/** What the settings screen sets, and the KV cache types a bundle offers. */
import type { Manifest } from "edgedec-engine";

export interface Settings {
  temperature: number;      // 0: greedy
  maxTokens: number;
  kvType: string;
  mode: "plain" | "lookup"; // lookup: drafts copied from the conversation, verified in one call (faster on code)
}

export const DEFAULT_SETTINGS: Settings = { temperature: 0, maxTokens: 256, kvType: "fp32", mode: "plain" };

export interface KvChoice {
  type: string;
  runs: boolean;            // whether this engine runs it
}

/**
 * The cache types the Python runtime offers for this bundle (edgedec/kvcache.py, runtimes/onnxruntime.py):
 * a mobile bundle's built-in type only; otherwise fp32 and fp16, and int8 and int4 when the bundle has
 * calibrated KV ranges (`kv`). This engine runs the graphs as they are: a mobile bundle's built-in type
 * (int8), else fp32; it has not ported the Python runtime's load-time cache variants (engine/README.md).
 */
export function kvChoices(manifest: Manifest): KvChoice[] {
  const mobile = manifest.mobile;
  const types = mobile?.cache ? [mobile.cache] : ["fp32", "fp16", ...(manifest.kv ? ["int8", "int4"] : [])];
  return types.map((type) => ({ type, runs: type === (mobile?.cache ?? "fp32") }));
}
