/** Plain decoding: one forward pass of the full model per token (edgedec/strategies/plain.py). */
import type { Sampler } from "./sampling.js";

/** What a runner gives a strategy (the engine's Runner; edgedec/runtimes/contract.py). */
export interface ForwardRunner {
  /** Full model on new tokens: the logits of the last position [vocab]. */
  forward(tokens: readonly number[]): Promise<Float32Array>;
}

export interface Step {
  token: number;
  logits: Float32Array;     // what the token was chosen from
}

/**
 * Prefill `newTokens` (appended to what the runner has cached), then sample one token per step.
 *
 * history: every token in the context so far (for repetition penalties); extended in place.
 * The consumer stops the loop (return from for-await): the token it stopped on is never fed.
 */
export async function* plain(runner: ForwardRunner, newTokens: readonly number[], sample: Sampler,
                             history: number[]): AsyncGenerator<Step> {
  let logits = await runner.forward(newTokens);
  while (true) {
    const token = sample.sample(logits, history);
    history.push(token);
    yield { token, logits };
    logits = await runner.forward([token]);
  }
}
