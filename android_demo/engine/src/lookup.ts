/**
 * Lookup decoding: model-free drafts from the context (edgedec/strategies/lookup.py, prompt lookup decoding).
 *
 * If the last n tokens (n from 8 down to minMatch) occurred earlier in the conversation, propose the tokens
 * that followed their most recent earlier occurrence, and verify [x, d1..dm] with the whole model in one
 * call. Each row's token is sampled as a plain step would sample it; the drafts are kept while they equal
 * what was sampled, and when all pass, the last row gives one more token. Every emitted token is the one
 * plain decoding would emit, provided every call runs on the many-row kernels (Runner.minRows = 2; a
 * one-token step is padded): the output is then token for token Python's `--mode plain --exact`.
 *
 * Python chooses rounds with a cost model that learns how often each match length is right; this engine
 * keeps a fixed rule instead: verify when the match is at least `minMatch` tokens long (a one-token match is
 * rarely right: bench/README.md, "Prompt lookup: how long a suffix to match").
 */
import type { Sampler } from "./sampling.js";

export interface LookupConfig {
  maxDraft: number;        // most tokens a round verifies
  ngramMax: number;        // longest suffix to match
  minMatch: number;        // shortest match worth a round
}

export const LOOKUP_DEFAULTS: LookupConfig = { maxDraft: 8, ngramMax: 8, minMatch: 2 };

/** What a runner gives lookup (the engine's Runner on its many-row path). */
export interface RowRunner {
  readonly length: number;
  readonly nCtx: number;
  forward(tokens: readonly number[]): Promise<Float32Array>;
  forwardAll(tokens: readonly number[]): Promise<Float32Array[]>;
  truncate(length: number): void;
}

export interface LookupStep {
  token: number;
  logits: Float32Array;
  source: "plain" | "lookup" | "verify";   // a plain step, an accepted draft, or a verifying row's own token
}

/**
 * Up to `maxTokens` tokens that followed the most recent earlier match of the longest suffix n-gram of
 * `history` (n from ngramMax down to minMatch), and that n; [[], 0] when nothing matches.
 */
export function propose(history: readonly number[], maxTokens: number, ngramMax: number,
                        minMatch = 1): [number[], number] {
  const h = history.length;
  for (let n = Math.min(ngramMax, h - 1); n >= minMatch; n--) {
    for (let start = h - n - 1; start >= 0; start--) {       // most recent first
      let j = 0;
      while (j < n && history[start + j] === history[h - n + j]) j++;
      if (j === n) return [history.slice(start + n, start + n + maxTokens), n];
    }
  }
  return [[], 0];
}

/** Prefill `newTokens`, then decode in lookup rounds where the context offers a match, plain steps elsewhere. */
export async function* lookup(runner: RowRunner, newTokens: readonly number[], sample: Sampler, history: number[],
                              cfg: LookupConfig = LOOKUP_DEFAULTS): AsyncGenerator<LookupStep> {
  let logits = await runner.forward(newTokens);
  let x = sample.sample(logits, history);
  history.push(x);
  yield { token: x, logits, source: "plain" };
  while (true) {
    const [proposal, n] = propose(history, cfg.maxDraft, cfg.ngramMax, cfg.minMatch);
    const drafts = proposal.slice(0, Math.max(0, runner.nCtx - runner.length - 2));
    if (!drafts.length) {
      logits = await runner.forward([x]);
      x = sample.sample(logits, history);
      history.push(x);
      yield { token: x, logits, source: "plain" };
      continue;
    }
    const base = runner.length;
    const rows = await runner.forwardAll([x, ...drafts]);
    const steps: LookupStep[] = [];
    for (const [i, row] of rows.entries()) {       // row i: the token after x, d1..di
      const token = sample.sample(row, history);
      history.push(token);
      const accepted = i < drafts.length && token === drafts[i];
      steps.push({ token, logits: row, source: accepted ? "lookup" : "verify" });
      if (!accepted) break;
    }
    runner.truncate(base + steps.length);         // x and the accepted drafts stay; the rest is overwritten
    yield* steps;
    x = steps[steps.length - 1].token;
  }
}
