/** The JS tokenizer gives the Python tokenizer's ids, for real text and for chat-templated prompts. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { findStop, readBundle, StreamDecoder, stopPrefixLen, TextStream, Tokenizer } from "../src/node.js";
import { BUNDLE, REFERENCE, SKIP } from "./env.js";

/** The first index where a and b differ, or -1. */
function firstDifference(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.max(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return -1;
}

describe("tokenizer against Python", { skip: SKIP }, () => {
  const tok = SKIP ? null! : new Tokenizer(readBundle(BUNDLE!));
  const ref = REFERENCE!;

  test("encode gives Python's ids for real text", () => {
    assert.ok(ref.texts.length >= 10, "the reference should hold at least 10 texts");
    let tokens = 0;
    for (const [i, text] of ref.texts.entries()) {
      const ids = tok.encode(text);
      const k = firstDifference(ids, ref.text_ids[i]);
      assert.equal(k, -1, `text ${i} differs at token ${k}: JS ${JSON.stringify(ids.slice(k, k + 5))} vs ` +
        `Python ${JSON.stringify(ref.text_ids[i].slice(k, k + 5))} around ${JSON.stringify(text.slice(0, 80))}`);
      tokens += ids.length;
    }
    assert.ok(tokens > 2000, `only ${tokens} tokens of text compared`);
  });

  test("decode round-trips", () => {
    for (const [i, text] of ref.texts.entries()) {
      assert.equal(tok.decode(ref.text_ids[i]), text, `text ${i}`);
    }
  });

  test("the chat template renders as edgedec's Jinja2 one", () => {
    for (const [i, prompt] of ref.prompts.entries()) {
      const ids = tok.encode(tok.renderChat([{ role: "user", content: prompt }]));
      const k = firstDifference(ids, ref.templated_ids[i]);
      assert.equal(k, -1, `prompt ${i} differs at token ${k}`);
    }
  });

  test("streaming decode hands out the whole text, never half a character", () => {
    for (const [i, ids] of ref.text_ids.entries()) {
      const d = new StreamDecoder(tok);
      let out = "";
      for (const t of ids) {
        const piece = d.push(t);
        assert.ok(!piece.endsWith("\ufffd"), `text ${i}: a broken character was handed out`);
        out += piece;
      }
      out += d.flush();
      assert.equal(out, ref.texts[i], `text ${i}`);
    }
  });

  test("a stop string cuts the reply and is never handed out, even split over tokens", () => {
    const text = ref.texts.find((t) => t.length > 200)!;
    const stop = text.slice(100, 112);
    const s = new TextStream(tok, [stop]);
    let out = "", stopped = false;
    for (const t of tok.encode(text)) {
      stopped = s.push(t);
      out += s.take(stopped, stopped);
      assert.ok(!out.includes(stop), "the stop string was handed out");
      if (stopped) break;
    }
    assert.ok(stopped);
    assert.equal(out, text.slice(0, text.indexOf(stop)));
  });
});

test("stop-string helpers", () => {
  assert.equal(findStop("abc</s>def", ["</s>", "zz"]), 3);
  assert.equal(findStop("abc", ["</s>"]), null);
  assert.equal(stopPrefixLen("hello </", ["</s>"]), 2);
  assert.equal(stopPrefixLen("hello", ["</s>"]), 0);
});
