/**
 * The engine: a bundle's segment graphs and head graph under ONNX Runtime (onnxruntime-node, or the
 * platform's: platform.ts), and conversations on them that decode exactly as the Python runtime's plain
 * mode (edgedec/runtimes/onnxruntime.py, session.py).
 *
 *     const engine = await Engine.load("/data/local/tmp/SmolLM2-135M-Instruct-int4");
 *     const chat = engine.session();                 // one conversation: its KV cache and history
 *     const r = await chat.generate([{ role: "user", content: "Hi" }], { maxTokens: 64 },
 *                                   (step) => process.stdout.write(step.text));
 *
 * KV cache. Each layer has one Float32Array for keys and one for values, [1, n_kv_heads, capacity, head_dim]
 * (Int8Array for a mobile bundle, whose graphs have an int8 cache built in). Every call feeds the same Tensor
 * as `past_key_i` and fetches it as `present_key_i` (a preallocated output in session.run's fetches), so
 * GroupQueryAttention sees one buffer and writes the new positions in place, as the Python runtime's IO
 * binding does. onnxruntime-node (1.30) then copies every fetched output into a fresh JS buffer for the
 * result object, whatever we do with it; that copy costs time in proportion to the buffer, so the cache is
 * not allocated for nCtx up front but grown `cacheChunk` positions at a time (the positions held move over
 * once per growth); decoding still slows down as the conversation grows. GroupQueryAttention's results do not
 * depend on the capacity (checked: bit-identical for 64, 100, 257 and 2049 slots).
 *
 * A mobile bundle with one segment has the head inside that graph (manifest mobile.fused): one session, so one
 * thread pool whose workers may spin, and one call a token; its input logits_rows picks the rows to score.
 *
 * Row paths. ORT's MatMulNBits and GroupQueryAttention round differently for one row than for several;
 * like Python's plain mode (min_rows=1) a prefill is one call of every segment with all new tokens, the
 * head runs on its last row only, and each decoded token is one one-row call.
 *
 * A conversation reuses the longest common prefix of its next prompt with what its cache holds, so a chat
 * turn prefills only the new message (`Result.nFedTokens`, `Runner.tokensFed` count what was fed).
 */
import type { InferenceSession, Tensor } from "onnxruntime-common";

import { Bundle, BundleError, LlamaConfig, readBundle, Segment } from "./bundle.js";
import { getPlatform, type Ort, type Platform } from "./platform.js";
import { lookup, type LookupStep } from "./lookup.js";
import { plain } from "./plain.js";
import { samplerConfig, Sampler, SamplerConfig } from "./sampling.js";
import { Message, TextStream, Tokenizer } from "./tokenizer.js";

/** A prompt or conversation does not fit in the context window. */
export class ContextOverflowError extends Error {
  override name = "ContextOverflowError";
}

/** A conversation was asked for a second answer while its first is still streaming. */
export class SessionBusyError extends Error {
  override name = "SessionBusyError";
}

export interface EngineOptions {
  threads?: number;       // intra-op threads of each graph (default 2)
  nCtx?: number;          // positions each conversation's cache may hold (default 2048, as Python's load)
  cacheChunk?: number;    // the cache grows this many positions at a time (default 64)
  spinning?: boolean;     // let the layers' idle ORT workers spin (default: only for one-segment bundles; README)
  platform?: Platform;    // file reads and ONNX Runtime (default: the one set with setPlatform)
}

export class Engine {
  readonly config: LlamaConfig;
  readonly segments: Segment[];
  private defaultSession: Session | null = null;

  private constructor(readonly bundle: Bundle, readonly tokenizer: Tokenizer,
                      readonly sessions: InferenceSession[], readonly head: InferenceSession | null,
                      readonly nCtx: number, readonly threads: number, readonly cacheChunk: number,
                      readonly cacheType: CacheType, readonly prefillChunk: number) {
    this.config = bundle.config;
    this.segments = bundle.segments;
  }

  /** The ONNX Runtime API the graphs run on (the platform's). */
  get ort(): Ort {
    return this.bundle.platform.ort;
  }

  /** Load the bundle at `path` (readBundle's checks first, then the graphs). */
  static async load(path: string, opts: EngineOptions = {}): Promise<Engine> {
    const threads = opts.threads ?? 2;
    const nCtx = opts.nCtx ?? 2048;
    if (!Number.isInteger(threads) || threads < 1) throw new RangeError("threads must be at least 1");
    const platform = opts.platform ?? getPlatform();
    const bundle = readBundle(path, platform);
    if (!Number.isInteger(nCtx) || nCtx < 1 || nCtx > bundle.config.context) {
      throw new RangeError(`nCtx ${nCtx} is out of range; this model supports 1..${bundle.config.context}`);
    }
    const cacheType = bundleCacheType(bundle);
    const tokenizer = new Tokenizer(bundle);
    const options: InferenceSession.SessionOptions = {
      executionProviders: ["cpu"],
      graphOptimizationLevel: "all",
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      executionMode: "sequential",
      logSeverityLevel: 3,
    };
    // Each session has a thread pool of its own here. Idle workers that spin take cores from the next
    // session, so only a one-segment bundle's layers spin by default (a mobile bundle: export --target
    // mobile), the head never (engine/README.md has the measurements).
    // (an ORT-format graph of a mobile bundle replays the optimizations saved at export, as Python does)
    const saved = bundle.segments[0].file.endsWith(".ort") ? { enable_saved_runtime_optimizations: "1" } : {};
    const spin = (on: boolean): InferenceSession.SessionOptions =>
      ({ ...options, extra: { session: { ...saved, intra_op: { allow_spinning: on ? "1" : "0" } } } });
    const layerOptions = spin(opts.spinning ?? bundle.segments.length === 1);
    const load = async (file: string, o: InferenceSession.SessionOptions) => {
      try {
        return await platform.ort.InferenceSession.create(bundle.file(file), o);
      } catch (e) {
        const first = String((e as Error).message).split("\n")[0].slice(0, 200);
        throw new Error(`${bundle.file(file)} could not be loaded by ONNX Runtime (${first}); ` +
          "export the bundle again");
      }
    };
    const sessions = [];
    for (const s of bundle.segments) sessions.push(await load(s.file, layerOptions));
    // a fused mobile bundle's one graph holds the head too (export/mobile.py fuse_head): one session, one pool
    const head = bundle.manifest.mobile?.fused ? null : await load(bundle.manifest.head.file, spin(false));
    // a mobile bundle's prompts are read prefill_chunk tokens per call (as its Python runtime does): one long
    // call's activations are what a phone runs out of memory on
    const chunk = bundle.manifest.mobile?.prefill_chunk;
    return new Engine(bundle, tokenizer, sessions, head, nCtx, threads, opts.cacheChunk ?? 64, cacheType,
                      chunk ?? Infinity);
  }

  /** A new conversation on this model, with an empty KV cache. */
  session(): Session {
    return new Session(this);
  }

  get default(): Session {
    this.defaultSession ??= this.session();
    return this.defaultSession;
  }

  /** Generate on the default session (see Session.generate). */
  generate(input: Input, options: GenerateOptions = {}, onToken?: (r: Response) => void): Promise<Result> {
    return this.default.generate(input, options, onToken);
  }

  /** Token ids for a raw prompt (chat-formatted as one user turn when `chat`) or a message list. */
  encodePrompt(input: string | readonly Message[], system?: string, chat = true): number[] {
    let messages: readonly Message[];
    if (typeof input === "string") {
      if (!chat) return this.tokenizer.encode(input);
      messages = [...(system ? [{ role: "system", content: system }] : []), { role: "user", content: input }];
    } else {
      messages = input;
    }
    return this.tokenizer.encode(this.tokenizer.renderChat(messages));
  }

  async release(): Promise<void> {
    for (const s of this.sessions) await s.release();
    await this.head?.release();
  }
}

/** The cache types this engine runs: the graphs' own. A mobile bundle (edgedec export --target mobile) has its
 * type built into the graphs (int8, scaled inside them); any other bundle's graphs take an fp32 cache. */
export type CacheType = "fp32" | "int8";
const CACHE_ARRAYS = { fp32: Float32Array, int8: Int8Array } as const;
const CACHE_TENSOR_TYPES = { fp32: "float32", int8: "int8" } as const;

export function bundleCacheType(bundle: Bundle): CacheType {
  const built = bundle.manifest.mobile?.cache ?? "fp32";
  if (!(built in CACHE_ARRAYS)) {
    throw new BundleError(`${bundle.path} has a ${built} KV cache built into its graphs, which this engine does ` +
      "not run (fp32 or int8); export it again with edgedec export --target mobile");
  }
  return built as CacheType;
}

/** One preallocated buffer per layer for keys and one for values, and how many positions are valid. */
export class KVCache {
  keys: Tensor[] = [];
  values: Tensor[] = [];
  capacity = 0;
  length = 0;

  constructor(readonly nLayers: number, readonly nKvHeads: number, readonly headDim: number,
              private readonly ort: Ort = getPlatform().ort, readonly type: CacheType = "fp32") {}

  /** Make room for `total` positions, in steps of `chunk`, up to `limit`; true when the buffers changed. */
  reserve(total: number, chunk: number, limit: number): boolean {
    if (total <= this.capacity) return false;
    const cap = Math.min(Math.ceil(total / chunk) * chunk, limit);
    const [h, d] = [this.nKvHeads, this.headDim];
    const grow = (old: Tensor | undefined) => {
      const data = new CACHE_ARRAYS[this.type](h * cap * d);
      if (old !== undefined && this.length > 0) {        // the positions held, head by head
        const src = old.data as Float32Array | Int8Array;
        for (let j = 0; j < h; j++) {
          data.set(src.subarray(j * this.capacity * d, (j * this.capacity + this.length) * d), j * cap * d);
        }
      }
      return new this.ort.Tensor(CACHE_TENSOR_TYPES[this.type], data, [1, h, cap, d]);
    };
    this.keys = Array.from({ length: this.nLayers }, (_, i) => grow(this.keys[i]));
    this.values = Array.from({ length: this.nLayers }, (_, i) => grow(this.values[i]));
    this.capacity = cap;
    return true;
  }

  get nbytes(): number {
    return 2 * this.nLayers * this.nKvHeads * this.capacity * this.headDim * CACHE_ARRAYS[this.type].BYTES_PER_ELEMENT;
  }
}

/** One conversation's KV cache and the calls on the graphs (edgedec's OrtRunner, one row path). */
export class Runner {
  cache: KVCache | null = null;
  tokensFed = 0;                    // tokens run through the layers since this runner was made
  private feeds: Record<string, Tensor>[] = [];
  private fetches: Record<string, Tensor | null>[] = [];
  private readonly seqlens = new Int32Array(1);     // (tokens in cache after this call) - 1
  private readonly total = new Int32Array(1);       // tokens in cache after this call
  private readonly seqlensTensor: Tensor;
  private readonly totalTensor: Tensor;

  minRows = 1;                      // the row path: 1, or 2 (many-row kernels for every call; lookup's)

  constructor(readonly engine: Engine, readonly nCtx: number) {
    this.seqlensTensor = new engine.ort.Tensor("int32", this.seqlens, [1]);
    this.totalTensor = new engine.ort.Tensor("int32", this.total, []);
  }

  get length(): number {
    return this.cache?.length ?? 0;
  }

  /** Bind each layer's buffer as both past and present (again after the cache grew). */
  private bind(): void {
    const cache = this.cache!;
    this.feeds = [];
    this.fetches = [];
    for (const seg of this.engine.segments) {
      const feeds: Record<string, Tensor> = { seqlens_k: this.seqlensTensor, total_seq_len: this.totalTensor };
      const fetches: Record<string, Tensor | null> = this.engine.head ? { hidden_out: null } : { logits: null };
      for (let i = seg.start; i < seg.end; i++) {
        feeds[`past_key_${i}`] = fetches[`present_key_${i}`] = cache.keys[i];
        feeds[`past_value_${i}`] = fetches[`present_value_${i}`] = cache.values[i];
      }
      this.feeds.push(feeds);
      this.fetches.push(fetches);
    }
  }

  /**
   * Run every layer on new tokens: hidden [1, S, H]. The positions written are length .. length+S-1. On the
   * many-row path (minRows 2) a one-token call is padded to two rows, the last token repeated, and the
   * padding row's position is dropped (edgedec/runtimes/onnxruntime.py, "Row paths").
   */
  async layers(tokens: readonly number[]): Promise<Tensor> {
    if (!this.engine.head) throw new Error("a fused bundle runs its layers and head as one graph; call forward");
    const n = tokens.length;
    let out = this.prepare(tokens);
    const rows = out.dims[1];
    for (let s = 0; s < this.engine.segments.length; s++) {
      const feeds = { ...this.feeds[s], [s === 0 ? "input_ids" : "hidden_in"]: out };
      const result = await this.engine.sessions[s].run(feeds, this.fetches[s]);
      out = result.hidden_out as Tensor;
    }
    this.advance(n);
    return rows > n ? this.rows(out, 0, n) : out;
  }

  private advance(n: number): void {
    this.cache!.length += n;
    this.tokensFed += n;
  }

  /** Check the context, make room for the call's rows and set its positions: the input_ids [1, rows]. */
  private prepare(tokens: readonly number[]): Tensor {
    const cfg = this.engine.config;
    this.cache ??= new KVCache(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, this.engine.ort, this.engine.cacheType);
    const n = tokens.length;
    const rows = Math.max(n, this.minRows);
    const past = this.cache.length;
    if (past + n > this.nCtx) {
      throw new ContextOverflowError(`${past + n} positions do not fit the ${this.nCtx}-token context; ` +
        "reset the conversation, shorten the prompt, or raise nCtx");
    }
    // (one slot past nCtx, as Python's cache has, for a padding row at the end of the context)
    if (this.cache.reserve(past + rows, this.engine.cacheChunk, this.nCtx + 1) || !this.feeds.length) this.bind();
    this.seqlens[0] = past + rows - 1;
    this.total[0] = past + rows;
    const ids = BigInt64Array.from({ length: rows }, (_, i) => BigInt(tokens[Math.min(i, n - 1)]));
    return new this.engine.ort.Tensor("int64", ids, [1, rows]);
  }

  /**
   * A fused bundle's one call (layers and head in one graph): logits [S * vocab] of every new token, or
   * [vocab] of the last. The head is asked for the rows Runner.head would read, padding included
   * (edgedec/runtimes/ort_fused.py).
   */
  private async fused(tokens: readonly number[], everyRow: boolean): Promise<Float32Array> {
    const n = tokens.length;
    const scored = everyRow ? n : 1;
    const pick = BigInt64Array.from({ length: Math.max(scored, this.minRows) },
                                    (_, i) => BigInt(everyRow ? Math.min(i, n - 1) : n - 1));
    const ids = this.prepare(tokens);     // (first: it binds the cache into feeds and fetches)
    const rows = new this.engine.ort.Tensor("int64", pick, [pick.length]);
    const feeds = { ...this.feeds[0], input_ids: ids, logits_rows: rows };
    const result = await this.engine.sessions[0].run(feeds, this.fetches[0]);
    this.advance(n);
    return (result.logits.data as Float32Array).subarray(0, scored * this.engine.config.vocab);
  }

  /** Rows [from, to) of hidden [1, S, H], as a tensor of its own. */
  private rows(hidden: Tensor, from: number, to: number): Tensor {
    const H = hidden.dims[2];
    // a copy, not a subarray: onnxruntime-react-native 1.24.3 ignores a typed array's byteOffset
    const data = (hidden.data as Float32Array).slice(from * H, to * H);
    return new this.engine.ort.Tensor("float32", data, [1, to - from, H]);
  }

  /** Logits [S * vocab] (row-major) of the head on hidden [1, S, H] (padded to minRows, as layers). */
  async head(hidden: Tensor): Promise<Float32Array> {
    const [n, H] = [hidden.dims[1], hidden.dims[2]];
    if (n < this.minRows) {
      const data = new Float32Array(this.minRows * H);
      for (let i = 0; i < this.minRows; i++) data.set(hidden.data as Float32Array, i * H);
      hidden = new this.engine.ort.Tensor("float32", data, [1, this.minRows, H]);
    }
    const result = await this.engine.head!.run({ hidden });
    const logits = result.logits.data as Float32Array;
    return n < this.minRows ? logits.subarray(0, n * this.engine.config.vocab) : logits;
  }

  /** Full model on new tokens (in prefillChunk pieces): the logits of the last position [vocab]. */
  async forward(tokens: readonly number[]): Promise<Float32Array> {
    const chunk = Math.min(this.engine.prefillChunk, tokens.length);
    if (!this.engine.head) {
      let logits!: Float32Array;
      for (let s = 0; s < tokens.length; s += chunk) logits = await this.fused(tokens.slice(s, s + chunk), false);
      return logits;
    }
    let h!: Tensor;
    for (let s = 0; s < tokens.length; s += chunk) h = await this.layers(tokens.slice(s, s + chunk));
    const rows = h.dims[1];    // the head reads the last row only, as Python's forward slices hidden[:, -1:]
    return this.head(rows > 1 ? this.rows(h, rows - 1, rows) : h);
  }

  /** Full model on a few new tokens in one call: the logits of every position, one array per token. */
  async forwardAll(tokens: readonly number[]): Promise<Float32Array[]> {
    const logits = this.engine.head ? await this.head(await this.layers(tokens)) : await this.fused(tokens, true);
    const V = this.engine.config.vocab;
    return tokens.map((_, i) => logits.subarray(i * V, (i + 1) * V));
  }

  /** Forget positions from `length` on (the next call overwrites them in place). */
  truncate(length: number): void {
    if (this.cache) this.cache.length = Math.min(this.cache.length, length);
  }

  /** Free the cache (the next call allocates a fresh one). */
  release(): void {
    this.cache = null;
    this.feeds = [];
    this.fetches = [];
  }
}

export type Input = string | readonly Message[] | readonly number[];

export interface GenerateOptions {
  maxTokens?: number;             // default 256
  temperature?: number;           // 0 (default) = greedy
  topK?: number;
  topP?: number;
  minP?: number;
  repetitionPenalty?: number;
  seed?: number | null;
  stop?: readonly string[];       // stop strings: the reply ends before the first one
  system?: string;                // a system message before a string prompt
  chat?: boolean;                 // apply the chat template to a string prompt (default true)
  ignoreEos?: boolean;            // go on past the model's end of turn
  keepLogits?: boolean;           // Result.logits: the logits each token was chosen from
  signal?: AbortSignal;           // stop early (finishReason "abort")
  mode?: "plain" | "lookup";      // lookup: drafts from the context, verified in one call (lookup.ts)
}

/** One streamed step: a token and the text it completes (may be "" mid-character). */
export interface Response {
  text: string;
  token: number;
  nPromptTokens: number;
  nNewTokens: number;
  prefillTokS: number;
  decodeTokS: number;
  finishReason: FinishReason | null;
  notice: string | null;
}

/** "stop": end of turn or a stop string; "length": maxTokens; "context": the cache is full. */
export type FinishReason = "stop" | "length" | "context" | "abort";

export interface Result {
  text: string;
  tokens: number[];
  nPromptTokens: number;
  nFedTokens: number;             // prompt tokens this call prefilled (the rest came from the cache)
  nNewTokens: number;
  prefillTokS: number;            // prompt tokens / time to the first token (as Python's Result)
  decodeTokS: number;             // tokens after the first / time after the first
  finishReason: FinishReason;
  notice: string | null;
  logits?: Float32Array[];        // with keepLogits: per token, the logits it was chosen from
  nLookupTokens: number;          // tokens that came from accepted lookup drafts
}

/** One conversation on an Engine: its token history and its KV cache (edgedec/session.py). */
export class Session {
  readonly backend: Runner;
  context: number[] = [];         // tokens whose KV the runner holds: context[:backend.length]
  turns = 0;
  lastResult: Result | null = null;
  private streaming = false;

  constructor(readonly model: Engine) {
    this.backend = new Runner(model, model.nCtx);
  }

  /** Forget the conversation and free its KV cache. */
  reset(): void {
    this.backend.release();
    this.context = [];
  }

  /** Keep the cached prefix that `ids` shares; return the tokens still to feed (at least one). */
  reusePrefix(ids: readonly number[]): number[] {
    const cached = this.context.slice(0, this.backend.length);
    const limit = Math.min(cached.length, ids.length - 1);   // always feed >= 1 token to get fresh logits
    let n = 0;
    while (n < limit && cached[n] === ids[n]) n++;
    this.backend.truncate(n);
    this.context = [...ids];
    return ids.slice(n);
  }

  /** The prompt, cut to its last tokens when it does not fit the context, and what was done. */
  fit(ids: number[], maxTokens: number): [number[], string | null] {
    const nCtx = this.model.nCtx;
    const room = nCtx - 1;
    if (ids.length <= room) return [ids, null];
    const keep = Math.max(1, room - Math.min(maxTokens, Math.floor(room / 2)));
    return [ids.slice(-keep), `the prompt has ${ids.length} tokens but the context holds ${nCtx}; ` +
      `kept its last ${keep} tokens (raise nCtx to keep more)`];
  }

  /**
   * Answer a prompt (raw text, chat-formatted unless chat: false), a message list, or token ids, token
   * by token: `onToken` gets each step's Response; the whole answer comes back as a Result.
   */
  async generate(input: Input, options: GenerateOptions = {}, onToken?: (r: Response) => void): Promise<Result> {
    const maxTokens = options.maxTokens ?? 256;
    if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new RangeError("maxTokens must be at least 1");
    const cfg: SamplerConfig = samplerConfig({
      temperature: options.temperature, topK: options.topK, topP: options.topP, minP: options.minP,
      repetitionPenalty: options.repetitionPenalty, seed: options.seed,
    });
    let ids: number[];
    if (typeof input === "string") {
      ids = this.model.encodePrompt(input, options.system, options.chat ?? true);
    } else if (input.length && typeof input[0] === "number") {
      ids = [...(input as readonly number[])];
    } else {
      ids = this.model.encodePrompt(input as readonly Message[]);
    }
    if (!ids.length) throw new RangeError("nothing to generate from: the prompt has no tokens");
    if (this.streaming) {
      throw new SessionBusyError("this session is still answering; wait for that answer, or use " +
        "engine.session() for another conversation");
    }
    this.streaming = true;
    try {
      return await this.decode(ids, maxTokens, new Sampler(cfg), options, onToken);
    } finally {
      this.streaming = false;
    }
  }

  private async decode(prompt: number[], maxTokens: number, sample: Sampler, options: GenerateOptions,
                       onToken?: (r: Response) => void): Promise<Result> {
    const [ids, fitNotice] = this.fit(prompt, maxTokens);
    let notice = fitNotice;
    let firstNotice = fitNotice;
    const nCtx = this.model.nCtx;
    const eos: ReadonlySet<number> = options.ignoreEos ? new Set() : this.model.tokenizer.eosIds;
    const nPrompt = ids.length;
    const history = [...ids];
    const stream = new TextStream(this.model.tokenizer, options.stop ?? []);
    const text: string[] = [], tokens: number[] = [], logits: Float32Array[] = [];
    const t0 = performance.now();
    let tFirst = 0, now = 0, nNew = 0;
    let finish: FinishReason | null = null;
    let prefill = 0, decodeRate = 0;
    const fed = this.reusePrefix(ids);
    const mode = options.mode ?? "plain";
    if (mode !== "plain" && mode !== "lookup") throw new RangeError(`mode ${mode} is unknown; choose plain or lookup`);
    // lookup verifies many rows at once, so every call of it runs on the many-row kernels (Python's --exact)
    this.backend.minRows = mode === "lookup" ? 2 : 1;
    const steps = mode === "lookup" ? lookup(this.backend, fed, sample, history) : plain(this.backend, fed, sample, history);
    let nLookup = 0;
    try {
      for await (const step of steps) {
        if ((step as LookupStep).source === "lookup") nLookup += 1;
        now = performance.now();
        if (nNew === 0) tFirst = now;
        nNew += 1;
        this.context.push(step.token);
        tokens.push(step.token);
        if (options.keepLogits) logits.push(step.logits);
        prefill = nPrompt / Math.max((tFirst - t0) / 1000, 1e-9);
        decodeRate = nNew > 1 ? (nNew - 1) / ((now - tFirst) / 1000) : 0;
        const stopped = stream.push(step.token, eos.has(step.token));
        finish = stopped ? "stop" : null;
        if (finish === null && nNew >= maxTokens) {
          finish = "length";
        } else if (finish === null && this.backend.length + 1 >= nCtx) {
          finish = "context";
          notice = `the context (${nCtx} tokens) is full; raise nCtx or reset the conversation`;
          firstNotice ??= notice;
        } else if (finish === null && options.signal?.aborted) {
          finish = "abort";
        }
        const piece = stream.take(finish !== null, stopped);
        text.push(piece);
        onToken?.({
          text: piece, token: step.token, nPromptTokens: nPrompt, nNewTokens: nNew, prefillTokS: prefill,
          decodeTokS: decodeRate, finishReason: finish, notice,
        });
        notice = null;
        if (finish !== null) break;
      }
    } finally {
      this.context = this.context.slice(0, this.backend.length);
      this.turns += nNew > 0 ? 1 : 0;
    }
    this.lastResult = {
      text: text.join(""), tokens, nPromptTokens: nPrompt, nFedTokens: fed.length, nNewTokens: nNew,
      prefillTokS: prefill, decodeTokS: decodeRate, finishReason: finish!, notice: firstNotice,
      nLookupTokens: nLookup, ...(options.keepLogits ? { logits } : {}),
    };
    return this.lastResult;
  }
}
