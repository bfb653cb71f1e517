/**
 * Tokenizer, chat template, and streaming detokenization: edgedec/tokenizer.py in TypeScript.
 *
 * Encoding uses @huggingface/tokenizers on the bundle's tokenizer.json, without the tokenizer's own
 * special tokens, adding BOS only when the manifest says so (as Python's `Tokenizer.encode`). The chat
 * template is rendered with @huggingface/jinja, which, like edgedec's Jinja2 environment, trims blocks
 * and strips their leading whitespace.
 *
 * Streaming never hands out a broken UTF-8 character: byte-level BPE can split one character over
 * several tokens, so text is only released once the decoded tail no longer ends in U+FFFD.
 */
import { Template } from "@huggingface/jinja";
import { Tokenizer as HFTokenizer } from "@huggingface/tokenizers";

import { Bundle, BundleError } from "./bundle.js";

/** ChatML, for models that ship without a template. */
const FALLBACK_TEMPLATE =
  "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" +
  "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

export interface Message {
  role: string;
  content: string;
}

export class Tokenizer {
  readonly hf: HFTokenizer;
  readonly bosId: number | null;
  readonly eosIds: ReadonlySet<number>;
  readonly addBos: boolean;
  private readonly template: Template;

  constructor(bundle: Bundle) {
    const t = bundle.manifest.tokenizer;
    try {
      const json = JSON.parse(bundle.platform.readText(bundle.file(t.file)));
      // no tokenizer_config.json in a bundle: decode as the Rust library does (no clean-up of spaces)
      this.hf = new HFTokenizer(json, { clean_up_tokenization_spaces: false });
    } catch (e) {
      throw new BundleError(`${bundle.path}: ${t.file} is unreadable (${(e as Error).message}); ` +
        "export the bundle again");
    }
    this.bosId = t.bos_id;
    this.eosIds = new Set(t.eos_ids);
    this.addBos = t.add_bos;
    this.template = new Template(bundle.manifest.chat_template ?? FALLBACK_TEMPLATE);
  }

  encode(text: string): number[] {
    let ids = this.hf.encode(text, { add_special_tokens: false }).ids;
    if (this.addBos && this.bosId !== null && (ids.length === 0 || ids[0] !== this.bosId)) {
      ids = [this.bosId, ...ids];
    }
    return ids;
  }

  decode(ids: readonly number[]): string {
    if (ids.length === 0) return "";
    return this.hf.decode([...ids], { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  }

  tokenText(id: number): string {
    return this.hf.id_to_token(id) ?? "";
  }

  renderChat(messages: readonly Message[], addGenerationPrompt = true): string {
    const bos = this.bosId !== null ? this.tokenText(this.bosId) : "";
    const eos = this.eosIds.size ? this.tokenText(Math.min(...this.eosIds)) : "";
    try {
      return this.template.render({
        messages, add_generation_prompt: addGenerationPrompt, bos_token: bos, eos_token: eos,
      });
    } catch (e) {
      throw new Error(`the model's chat template failed: ${(e as Error).message}`);
    }
  }
}

/** Turns a growing list of token ids into text deltas that never split a UTF-8 character. */
export class StreamDecoder {
  readonly ids: number[] = [];
  private prefix = 0;   // ids[prefix:read] is context for decoding, already handed out
  private read = 0;     // ids[read:] are not handed out yet

  constructor(private readonly tok: Tokenizer) {}

  push(token: number): string {
    this.ids.push(token);
    const before = this.tok.decode(this.ids.slice(this.prefix, this.read));
    const now = this.tok.decode(this.ids.slice(this.prefix));
    if (now.endsWith("\ufffd") || now.length <= before.length) {
      return "";                      // an incomplete character: wait for more tokens
    }
    [this.prefix, this.read] = [this.read, this.ids.length];
    return now.slice(before.length);
  }

  /** Whatever is left (at the end of generation), even an incomplete character. */
  flush(): string {
    const rest = this.tok.decode(this.ids.slice(this.prefix))
      .slice(this.tok.decode(this.ids.slice(this.prefix, this.read)).length);
    this.prefix = this.read = this.ids.length;
    return rest;
  }
}

/** A reply's text as its tokens arrive: UTF-8-safe pieces (StreamDecoder), cut at the first stop string,
 * and holding back what might still become one. */
export class TextStream {
  readonly decoder: StreamDecoder;
  private pending = "";     // decoded, not handed out yet

  constructor(tokenizer: Tokenizer, private readonly stop: readonly string[] = []) {
    this.decoder = new StreamDecoder(tokenizer);
  }

  /** Add a token (`eos`: the model's end of turn, whose text is not part of the reply); true when the
   * reply ends here (end of turn or a stop string). */
  push(token: number, eos = false): boolean {
    this.pending += eos ? this.decoder.flush() : this.decoder.push(token);
    const cut = findStop(this.pending, this.stop);
    if (cut !== null) {
      this.pending = this.pending.slice(0, cut);
      return true;
    }
    return eos;
  }

  /** The text that is safe to hand out now; with `final`, all of it (and, unless the reply `stopped`,
   * what the decoder still holds). */
  take(final = false, stopped = false): string {
    if (final) {
      const text = this.pending + (stopped ? "" : this.decoder.flush());
      this.pending = "";
      return text;
    }
    const hold = stopPrefixLen(this.pending, this.stop);
    const text = this.pending.slice(0, this.pending.length - hold);
    this.pending = this.pending.slice(this.pending.length - hold);
    return text;
  }
}

/** Where the first stop string in `text` starts, or null. */
export function findStop(text: string, stops: readonly string[]): number | null {
  const hits = stops.filter((s) => s && text.includes(s)).map((s) => text.indexOf(s));
  return hits.length ? Math.min(...hits) : null;
}

/** Length of the longest suffix of `text` that is a proper prefix of a stop string. */
export function stopPrefixLen(text: string, stops: readonly string[]): number {
  let best = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > best; n--) {
      if (text.endsWith(s.slice(0, n))) {
        best = n;
        break;
      }
    }
  }
  return best;
}
