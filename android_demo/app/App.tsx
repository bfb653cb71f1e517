/**
 * edgedec on a phone: a chat screen and a settings screen over one engine, loaded from the bundle pushed
 * to BUNDLE_ROOT (src/bundleLocation.ts). Two screens, so a state switch instead of a navigation library.
 */
import type { Engine } from "edgedec-engine";
import React, { useCallback, useEffect, useState } from "react";
import { Button, StatusBar, StyleSheet, Text, View } from "react-native";

import { BUNDLE_ROOT } from "./src/bundleLocation";
import ChatScreen from "./src/ChatScreen";
import { loadEngine } from "./src/platform";
import SettingsScreen from "./src/SettingsScreen";
import { DEFAULT_SETTINGS, type Settings } from "./src/settings";

type Screen = "chat" | "settings";

export default function App() {
  const [screen, setScreen] = useState<Screen>("chat");
  const [settings, setSettings] = useState<Settings>(DEFAULT_SETTINGS);
  const [engine, setEngine] = useState<Engine | null>(null);
  const [error, setError] = useState<string | null>(null);

  const load = useCallback(() => {
    setError(null);
    loadEngine().then((e) => {
      setEngine(e);
      setSettings((s) => ({ ...s, kvType: e.cacheType }));     // the cache the bundle's graphs run
    }, (e: Error) => setError(String(e.message ?? e)));
  }, []);
  useEffect(load, [load]);

  return (
    <View style={styles.app}>
      <StatusBar barStyle="dark-content" />
      <View style={styles.tabs}>
        {(["chat", "settings"] as const).map((s) => (
          <Text key={s} onPress={() => setScreen(s)} style={[styles.tab, s === screen && styles.current]}>
            {s === "chat" ? "Chat" : "Settings"}
          </Text>
        ))}
      </View>
      {/* the chat stays mounted behind the settings, so the conversation survives a visit there */}
      <View style={[styles.app, screen !== "chat" && styles.hidden]}>
        {engine ? <ChatScreen engine={engine} settings={settings} />
          : error ? (
            <View style={styles.message}>
              <Text>{error}</Text>
              <Button title="Try again" onPress={load} />
            </View>
          ) : <Text style={styles.message}>Loading the bundle from {BUNDLE_ROOT} ...</Text>}
      </View>
      {screen === "settings" &&
        <SettingsScreen engine={engine} bundlePath={BUNDLE_ROOT} settings={settings} onChange={setSettings} />}
    </View>
  );
}

const styles = StyleSheet.create({
  app: { flex: 1, backgroundColor: "#ffffff" },
  hidden: { display: "none" },
  tabs: { flexDirection: "row", borderBottomWidth: 1, borderColor: "#e5e7eb" },
  tab: { flex: 1, textAlign: "center", padding: 12, color: "#6b7280" },
  current: { color: "#111827", fontWeight: "bold" },
  message: { padding: 16, gap: 12 },
});
