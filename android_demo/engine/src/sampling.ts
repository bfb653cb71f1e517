/**
 * Turning logits into the next token: greedy, or temperature with top-k, top-p, min-p and a repetition
 * penalty (edgedec/sampling.py). Filters apply in llama.cpp's order: penalty, top-k, top-p, min-p,
 * temperature.
 *
 * Greedy is the same argmax as Python's (the first of equal maxima), so greedy output matches token for
 * token. Sampling draws from a seeded PRNG (xoshiro128**): reproducible for a seed, but not numpy's
 * stream, so a seeded sample differs from Python's.
 */

export interface SamplerConfig {
  temperature: number;        // 0 = greedy
  topK: number;               // keep the k most likely tokens (0 = all)
  topP: number;               // keep the smallest set with this much probability
  minP: number;               // drop tokens below minP * p(most likely)
  repetitionPenalty: number;  // >1 discourages tokens already in the context (CTRL-style)
  seed: number | null;        // for reproducible sampling
}

export const GREEDY: SamplerConfig = {
  temperature: 0, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, seed: null,
};

/** A full config from some fields, checked as Python's SamplerConfig.__post_init__. */
export function samplerConfig(c: Partial<SamplerConfig> = {}): SamplerConfig {
  const cfg = { ...GREEDY, ...Object.fromEntries(Object.entries(c).filter(([, v]) => v !== undefined)) };
  const checks: [boolean, string][] = [
    [cfg.temperature >= 0, "temperature must be >= 0"],
    [cfg.topK >= 0 && Number.isInteger(cfg.topK), "topK must be an integer >= 0"],
    [cfg.topP > 0 && cfg.topP <= 1, "topP must be in (0, 1]"],
    [cfg.minP >= 0 && cfg.minP < 1, "minP must be in [0, 1)"],
    [cfg.repetitionPenalty > 0, "repetitionPenalty must be > 0"],
  ];
  for (const [ok, msg] of checks) {
    if (!ok) throw new RangeError(msg);
  }
  return cfg;
}

export type Logits = ArrayLike<number>;

/** Index of the largest value (the first one among equals, as numpy's argmax). */
export function argmax(x: Logits): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) {
    if (x[i] > x[best]) best = i;
  }
  return best;
}

/** The two largest values and their indices: [top, second] (how close a greedy choice was). */
export function top2(x: Logits): { ids: [number, number]; values: [number, number] } {
  let a = -1, b = -1;
  for (let i = 0; i < x.length; i++) {
    if (a < 0 || x[i] > x[a]) {
      b = a;
      a = i;
    } else if (b < 0 || x[i] > x[b]) {
      b = i;
    }
  }
  return { ids: [a, b], values: [x[a], x[b]] };
}

export function applyPenalty(logits: Logits, history: readonly number[], penalty: number): Float64Array {
  const x = Float64Array.from(logits);
  if (penalty === 1 || !history.length) return x;
  for (const id of new Set(history)) {
    const v = x[id];
    x[id] = v > 0 ? v / penalty : v * penalty;
  }
  return x;
}

/** The distribution sampling draws from, after every filter ([V], sums to 1). */
export function probabilities(logits: Logits, cfg: SamplerConfig, history: readonly number[] = []): Float64Array {
  const x = applyPenalty(logits, history, cfg.repetitionPenalty);
  const n = x.length;
  if (cfg.temperature === 0) {
    const p = new Float64Array(n);
    p[argmax(x)] = 1;
    return p;
  }
  const keep = new Uint8Array(n).fill(1);
  if (cfg.topK && cfg.topK < n) {
    const kth = Float64Array.from(x).sort()[n - cfg.topK];
    for (let i = 0; i < n; i++) if (x[i] < kth) keep[i] = 0;
  }
  let xmax = -Infinity;
  for (let i = 0; i < n; i++) xmax = Math.max(xmax, x[i]);
  const p = new Float64Array(n);                   // filters use the untempered distribution
  let sum = 0;
  for (let i = 0; i < n; i++) {
    p[i] = keep[i] ? Math.exp(x[i] - xmax) : 0;
    sum += p[i];
  }
  for (let i = 0; i < n; i++) p[i] /= sum;
  if (cfg.topP < 1) {
    const order = Array.from({ length: n }, (_, i) => i).sort((i, j) => p[j] - p[i]);
    let cum = 0, cross = n - 1;
    for (let r = 0; r < n; r++) {               // keep through the token that crosses topP
      cum += p[order[r]];
      if (cum >= cfg.topP) {
        cross = r;
        break;
      }
    }
    for (let r = cross + 1; r < n; r++) keep[order[r]] = 0;
  }
  if (cfg.minP > 0) {
    let pmax = 0;
    for (let i = 0; i < n; i++) pmax = Math.max(pmax, p[i]);
    for (let i = 0; i < n; i++) if (p[i] < cfg.minP * pmax) keep[i] = 0;
  }
  let kmax = -Infinity;
  for (let i = 0; i < n; i++) if (keep[i]) kmax = Math.max(kmax, x[i]);
  const q = new Float64Array(n);
  let z = 0;
  for (let i = 0; i < n; i++) {
    q[i] = keep[i] ? Math.exp((x[i] - kmax) / cfg.temperature) : 0;
    z += q[i];
  }
  for (let i = 0; i < n; i++) q[i] /= z;
  return q;
}

/** xoshiro128**: a small, fast, seedable PRNG; `random()` is uniform in [0, 1). */
export class Rng {
  private s: Uint32Array;

  constructor(seed: number | null = null) {
    let x = (seed ?? Math.floor(Math.random() * 2 ** 32)) >>> 0;
    this.s = new Uint32Array(4);
    for (let i = 0; i < 4; i++) {               // splitmix32 spreads the seed over the state
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  private next(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  random(): number {
    return (this.next() * 2 ** 21 + (this.next() >>> 11)) / 2 ** 53;   // 53 random bits
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

export class Sampler {
  readonly rng: Rng;

  constructor(readonly cfg: SamplerConfig = GREEDY) {
    this.rng = new Rng(cfg.seed);
  }

  get greedy(): boolean {
    return this.cfg.temperature === 0;
  }

  /** The next token for `logits`, given the context so far (`history`, for the repetition penalty). */
  sample(logits: Logits, history: readonly number[] = []): number {
    if (this.greedy && this.cfg.repetitionPenalty === 1) return argmax(logits);
    return this.draw(probabilities(logits, this.cfg, history));
  }

  /** A token drawn from distribution `p`. */
  draw(p: Float64Array): number {
    const u = this.rng.random();
    let cum = 0;
    let last = 0;
    for (let i = 0; i < p.length; i++) {
      if (p[i] > 0) {
        cum += p[i];
        last = i;
        if (u < cum) return i;
      }
    }
    return last;                                  // u beyond the rounded total
  }
}
