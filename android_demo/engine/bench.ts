/**
 * Decode speed of the engine under Node: a short prompt, 64 new tokens (past the end of turn), median of
 * 3 runs, each on a fresh conversation.
 *
 *     npm run bench -- [BUNDLE] [--threads N] [--chunk N] [--spinning | --no-spinning] [--tokens N] [--runs N] [--context N]
 *     npm run bench -- [BUNDLE] --prompts FILE.json [--tokens N] [--runs N]      # plain against lookup
 *
 * --prompts: a JSON list of prompts; each run decodes every prompt with plain and then lookup decoding (fresh
 * conversations, greedy, stopping at the end of turn or --tokens), and reports each mode's median decode
 * tok/s, the median of the per-prompt lookup/plain ratios, and the share of tokens lookup drafts gave.
 *
 * bench_python.py measures the Python runtime the same way.
 */
import { readFileSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";

import { Engine } from "./src/node.js";

const args = process.argv.slice(2);
const VALUED = ["--threads", "--chunk", "--tokens", "--runs", "--context", "--prompts"];
const flag = (name: string, fallback: number) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : fallback;
};
const bundle = args.find((a, i) => !a.startsWith("--") && !VALUED.includes(args[i - 1])) ??
  join(homedir(), ".cache", "edgedec", "SmolLM2-135M-Instruct-int4");
const threads = flag("--threads", 2), tokens = flag("--tokens", 64), runs = flag("--runs", 3);
const chunk = flag("--chunk", 64), context = flag("--context", 0);
const spinning = args.includes("--spinning") ? true : args.includes("--no-spinning") ? false : undefined;   // (the engine's default)
const PROMPT = "Write a short story about a lighthouse keeper.";

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const engine = await Engine.load(bundle, { threads, cacheChunk: chunk, spinning });
const promptsFile = args.indexOf("--prompts") >= 0 ? args[args.indexOf("--prompts") + 1] : null;
if (promptsFile) {
  const prompts: string[] = JSON.parse(readFileSync(promptsFile, "utf8"));
  const rate = { plain: [] as number[], lookup: [] as number[] }, ratios: number[] = [];
  let fromLookup = 0, total = 0;
  for (let i = 0; i < runs; i++) {
    for (const p of prompts) {
      const a = await engine.session().generate(p, { maxTokens: tokens, mode: "plain" });
      const b = await engine.session().generate(p, { maxTokens: tokens, mode: "lookup" });
      rate.plain.push(a.decodeTokS);
      rate.lookup.push(b.decodeTokS);
      ratios.push(b.decodeTokS / a.decodeTokS);
      fromLookup += b.nLookupTokens;
      total += b.nNewTokens;
    }
  }
  await engine.release();
  console.log(JSON.stringify({
    runtime: "node", threads, tokens, runs, prompts: prompts.length, cache: engine.cacheType,
    plain_tok_s: median(rate.plain), lookup_tok_s: median(rate.lookup), lookup_over_plain: median(ratios),
    lookup_token_share: fromLookup / total,
  }));
  process.exit(0);
}
const decode: number[] = [], prefill: number[] = [];
// --context N: instead, N tokens of the prompt's text repeated (no chat template), to decode after a long context
const prompt = context ? engine.tokenizer.encode(PROMPT.repeat(Math.ceil(context / 5))).slice(0, context) : PROMPT;
for (let i = 0; i < runs; i++) {
  const r = await engine.session().generate(prompt, { maxTokens: tokens, ignoreEos: true });
  decode.push(r.decodeTokS);
  prefill.push(r.prefillTokS);
}
await engine.release();
console.log(JSON.stringify({
  runtime: "node", threads, chunk, spinning: spinning ?? "default", context, tokens, runs,
  decode_tok_s: median(decode), prefill_tok_s: median(prefill), decode_runs: decode.map((x) => +x.toFixed(1)),
  cache: engine.cacheType, peak_rss_mb: process.resourceUsage().maxRSS / 1024,   // (the process's high-water mark)
}));
