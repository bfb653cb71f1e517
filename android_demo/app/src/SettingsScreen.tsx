/** Settings: temperature, max tokens, decoding mode, and the KV cache type (the bundle's choices; the engine runs the
 * graphs' own). */
import type { Engine } from "edgedec-engine";
import React from "react";
import { Pressable, StyleSheet, Text, View } from "react-native";

import { kvChoices, type Settings } from "./settings";

interface Props {
  engine: Engine | null;          // null until the bundle has loaded
  bundlePath: string;
  settings: Settings;
  onChange: (s: Settings) => void;
}

const TEMPERATURES = [0, 0.3, 0.7, 1.0];
const MAX_TOKENS = [64, 128, 256, 512, 1024];
const MODES: Settings["mode"][] = ["plain", "lookup"];

/** A row of choices, one of them selected. */
function Choices<T>({ label, values, selected, show, enabled, onSelect }: {
  label: string; values: T[]; selected: T; show: (v: T) => string; enabled?: (v: T) => boolean;
  onSelect: (v: T) => void;
}) {
  return (
    <View style={styles.section}>
      <Text style={styles.label}>{label}</Text>
      <View style={styles.row}>
        {values.map((v) => {
          const on = enabled?.(v) ?? true;
          return (
            <Pressable key={show(v)} disabled={!on} onPress={() => onSelect(v)}
                       style={[styles.chip, v === selected && styles.selected, !on && styles.disabled]}>
              <Text>{show(v)}</Text>
            </Pressable>
          );
        })}
      </View>
    </View>
  );
}

export default function SettingsScreen({ engine, bundlePath, settings, onChange }: Props) {
  const kv = engine ? kvChoices(engine.bundle.manifest) : [];
  return (
    <View style={styles.screen}>
      <Choices label="Temperature" values={TEMPERATURES} selected={settings.temperature}
               show={(t) => (t === 0 ? "0 (greedy)" : String(t))}
               onSelect={(temperature) => onChange({ ...settings, temperature })} />
      <Choices label="Max tokens" values={MAX_TOKENS} selected={settings.maxTokens} show={String}
               onSelect={(maxTokens) => onChange({ ...settings, maxTokens })} />
      <Choices label="Decoding" values={MODES} selected={settings.mode} show={String}
               onSelect={(mode) => onChange({ ...settings, mode })} />
      <Choices label="KV cache type" values={kv.map((c) => c.type)} selected={settings.kvType} show={String}
               enabled={(t) => kv.some((c) => c.type === t && c.runs)}
               onSelect={(kvType) => onChange({ ...settings, kvType })} />
      <Text style={styles.note}>
        The bundle offers {kv.map((c) => c.type).join(", ") || "(not loaded)"}. This engine runs the graphs'
        own cache: the int8 one built into a mobile bundle (edgedec export --target mobile), else fp32; the
        Python runtime's load-time variants are not ported, so the others are greyed out.
      </Text>
      <Text style={styles.note}>Bundle: {engine ? engine.bundle.path : bundlePath}</Text>
      {engine && <Text style={styles.note}>Model: {engine.bundle.manifest.model.name}</Text>}
    </View>
  );
}

const styles = StyleSheet.create({
  screen: { flex: 1, padding: 12, gap: 12 },
  section: { gap: 6 },
  label: { fontWeight: "bold" },
  row: { flexDirection: "row", flexWrap: "wrap", gap: 6 },
  chip: { borderWidth: 1, borderColor: "#d1d5db", borderRadius: 16, paddingHorizontal: 12, paddingVertical: 6 },
  selected: { backgroundColor: "#dbeafe", borderColor: "#2563eb" },
  disabled: { opacity: 0.4 },
  note: { color: "#4b5563" },
});
