/**
 * What the tests read from the environment (tests/test_android_engine.py sets both):
 *
 *   EDGEDEC_BUNDLE     a bundle folder
 *   EDGEDEC_REFERENCE  a JSON file the Python runtime wrote: {prompts, templated_ids, greedy_tokens,
 *                      exact_greedy_tokens, texts, text_ids, chat?}; chat: {messages: [turn 1's, turn 2's],
 *                      ids: [...], tokens: [...]}
 *
 * Without them the tests that need a model skip.
 */
import { readFileSync } from "node:fs";

export interface Reference {
  prompts: string[];
  templated_ids: number[][];
  greedy_tokens: number[][];
  exact_greedy_tokens: number[][];   // plain --exact (many-row kernels): what lookup must equal
  max_tokens?: number;
  texts: string[];
  text_ids: number[][];
  chat?: { messages: { role: string; content: string }[][]; ids: number[][]; tokens: number[][]; max_tokens: number };
}

export const BUNDLE = process.env.EDGEDEC_BUNDLE || null;
const refPath = process.env.EDGEDEC_REFERENCE || null;
export const REFERENCE: Reference | null = refPath ? JSON.parse(readFileSync(refPath, "utf8")) : null;

/** A skip reason when the bundle or the reference is missing (for `test(name, { skip }, fn)`). */
export const SKIP: string | false = BUNDLE && REFERENCE ? false :
  "set EDGEDEC_BUNDLE and EDGEDEC_REFERENCE (tests/test_android_engine.py does)";
export const SKIP_BUNDLE: string | false = BUNDLE ? false : "set EDGEDEC_BUNDLE to a bundle folder";
