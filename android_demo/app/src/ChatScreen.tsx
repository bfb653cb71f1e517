/** The chat: messages, an input, the reply streamed token by token, its tok/s, and a stop button. */
import type { Engine, Message, Result } from "edgedec-engine";
import React, { useRef, useState } from "react";
import { Button, ScrollView, StyleSheet, Text, TextInput, View } from "react-native";

import type { Settings } from "./settings";

interface Props {
  engine: Engine;
  settings: Settings;
}

export default function ChatScreen({ engine, settings }: Props) {
  const [session] = useState(() => engine.session());     // one conversation: its KV cache and history
  const abort = useRef<AbortController | null>(null);
  const scroll = useRef<ScrollView>(null);
  const [messages, setMessages] = useState<Message[]>([]);
  const [input, setInput] = useState("");
  const [busy, setBusy] = useState(false);
  const [rate, setRate] = useState<number | null>(null);        // decode tok/s, live while streaming
  const [last, setLast] = useState<Result | null>(null);
  const [error, setError] = useState<string | null>(null);

  async function send() {
    const text = input.trim();
    if (!text || busy) return;
    const history: Message[] = [...messages, { role: "user", content: text }];
    let reply = "";
    setMessages([...history, { role: "assistant", content: "" }]);
    setInput("");
    setError(null);
    setRate(null);
    setBusy(true);
    abort.current = new AbortController();
    try {
      // the session reuses its cache: a turn prefills only the new message
      const r = await session.generate(history, {
        maxTokens: settings.maxTokens, temperature: settings.temperature, mode: settings.mode,
        signal: abort.current.signal,
      }, (step) => {
        reply += step.text;
        setMessages([...history, { role: "assistant", content: reply }]);
        setRate(step.decodeTokS);
      });
      setMessages([...history, { role: "assistant", content: r.text }]);
      setLast(r);
    } catch (e) {
      setMessages(history.slice(0, -1));
      setInput(text);
      setError(String((e as Error).message ?? e));
    } finally {
      setBusy(false);
      abort.current = null;
    }
  }

  function newChat() {
    session.reset();
    setMessages([]);
    setLast(null);
    setRate(null);
  }

  const stats = busy
    ? `${rate ? rate.toFixed(1) : "..."} tok/s`
    : last && `${last.decodeTokS.toFixed(1)} tok/s (prompt ${last.prefillTokS.toFixed(0)} tok/s), ` +
      `${last.nNewTokens} tokens, ${last.finishReason}`;
  return (
    <View style={styles.screen}>
      <ScrollView ref={scroll} style={styles.list}
                  onContentSizeChange={() => scroll.current?.scrollToEnd({ animated: false })}>
        {messages.map((m, i) => (
          <Text key={i} style={m.role === "user" ? styles.user : styles.assistant}>{m.content}</Text>
        ))}
      </ScrollView>
      {error && <Text style={styles.error}>{error}</Text>}
      {stats && <Text style={styles.stats}>{stats}</Text>}
      <View style={styles.row}>
        <TextInput style={styles.input} value={input} onChangeText={setInput} placeholder="Message"
                   multiline editable={!busy} />
        {busy
          ? <Button title="Stop" onPress={() => abort.current?.abort()} />
          : <Button title="Send" onPress={send} disabled={!input.trim()} />}
      </View>
      <Button title="New chat" onPress={newChat} disabled={busy || messages.length === 0} />
    </View>
  );
}

const bubble = { borderRadius: 8, padding: 8, marginVertical: 4 };

const styles = StyleSheet.create({
  screen: { flex: 1, padding: 8, gap: 6 },
  list: { flex: 1 },
  user: { alignSelf: "flex-end", backgroundColor: "#dbeafe", ...bubble },
  assistant: { alignSelf: "flex-start", backgroundColor: "#f3f4f6", ...bubble },
  error: { color: "#b91c1c" },
  stats: { color: "#4b5563", fontSize: 12 },
  row: { flexDirection: "row", alignItems: "center", gap: 6 },
  input: { flex: 1, borderWidth: 1, borderColor: "#d1d5db", borderRadius: 8, padding: 8, maxHeight: 120 },
});
