"""The `edgedec` command: a thin layer over the library. Domain errors become one line on stderr, with the
library's parameter names rendered as this command's flags (FLAGS).

    edgedec export                      # the default model -> ~/.cache/edgedec/SmolLM2-135M-Instruct-int4
    edgedec chat                        # talk to it (exports it first if needed)
    edgedec generate -p "Hello" --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from . import manifest
from .bundle import default_bundle_path, read_bundle
from .errors import EdgedecError

# library parameter -> the flag that sets it, for error messages and notices
FLAGS = {"n_ctx": "--ctx", "threads": "--threads", "max_tokens": "--max-tokens", "mode": "--mode",
         "backend": "--backend", "exit_layer": "--exit-layer", "k_max": "--draft-len", "max_draft": "--draft-len",
         "threshold": "--threshold", "temperature": "--temp", "top_k": "--top-k",
         "top_p": "--top-p", "min_p": "--min-p", "repetition_penalty": "--repeat-penalty", "window": "--window",
         "quant": "--quant", "cuts": "--cuts", "draft": "--draft", "kv": "--kv", "kv_window": "--kv-window",
         "kv_sinks": "--kv-sinks", "entropy_window": "--entropy-window", "margin": "--rollback-margin",
         "max_run": "--small-run"}
# speculation flags -> the config field they set, per mode
SPEC_FLAGS = {"exit_layer": "exit_layer",
              "draft_len": {"self-spec": "k_max", "lookup": "max_draft", "speculative": "k_max"},
              "threshold": "threshold", "lookup": "lookup", "draft": "draft", "adaptive": "adaptive",
              "entropy_window": "entropy_window", "rollback_margin": "margin", "small_run": "max_run"}


def progress_bar(label: str, i: int, n: int) -> None:
    width = 30
    done = int(width * i / max(n, 1))
    sys.stderr.write(f"\r[{'#' * done}{'.' * (width - done)}] {i}/{n} {label:<16}")
    if i >= n:
        sys.stderr.write("\n")
    sys.stderr.flush()


def default_source() -> Path:
    from edgedec.models.known import default_gguf
    return default_gguf()


def cmd_export(a) -> None:
    from edgedec.export.bundle_writer import export_bundle
    source = Path(a.source) if a.source else default_source()
    if a.output:
        out = Path(a.output)
    elif not a.source and a.quant == "int4" and a.target == "desktop":
        out = default_bundle_path()
    else:
        out = default_bundle_path().with_name(f"{source.stem}-{a.quant}" + ("-mobile" if a.target == "mobile" else ""))
    trained = a.draft and a.draft.endswith(".npz")
    draft = None if a.no_draft else a.draft if trained else "auto"
    path, written = export_bundle(source, out, quant=a.quant, cuts=a.cuts, progress=progress_bar, draft=draft,
                                  kv_text=a.kv_text, lora=a.lora, merge=a.merge,
                                  draft_model=None if trained else a.draft, target=a.target)
    w = written.quant.worst
    if w.tensor:
        print(f"worst quantization error: {w.tensor}: max |dw| {w.max_abs:.3g}, "
              f"mean |dw| {w.mean_abs:.3g}, relative rms {w.rel_rms:.3g}", file=sys.stderr)
    if written.mobile:
        m = written.mobile
        print(f"mobile bundle: {m.bundle_mb:.0f} MB, {m.cache} KV cache; expected peak RSS "
              + ", ".join(f"{v:.0f} MB at {int(k) // 1024}k" for k, v in m.rss_mb.items())
              + " positions (an estimate: loading measured here, plus the cache)", file=sys.stderr)
    print(path)


def ensure_default_bundle(path) -> Path:
    if path:
        return Path(path)
    p = default_bundle_path()
    if not (p / manifest.FILENAME).exists():
        from edgedec.export.bundle_writer import export_bundle
        print(f"no default bundle yet; exporting the default model to {p} (about a minute, once)", file=sys.stderr)
        export_bundle(default_source(), p, progress=progress_bar)
    elif _outdated(p):
        from edgedec.export.bundle_writer import export_bundle
        print(f"the default bundle at {p} predates trained drafts or KV calibration; exporting it again "
              "(about a minute, once)", file=sys.stderr)
        export_bundle(default_source(), p, progress=progress_bar)
    return p


def _outdated(bundle: Path) -> bool:
    """The default bundle lacks what export now writes: calibrated KV ranges, or the shipped draft."""
    try:
        if manifest.read(bundle).kv is None:
            return True
    except EdgedecError:
        return False                        # a broken bundle gets its own error when it is loaded
    return _lacks_shipped_draft(bundle)


def _lacks_shipped_draft(bundle: Path) -> bool:
    """The default bundle was exported before bundles held drafts (it has no model fingerprint), and this
    edgedec ships a draft for the default model. (A bundle exported with --no-draft is left alone.)"""
    from edgedec.export.drafts import model_fingerprint
    from edgedec.export.sources import load_source
    from edgedec.models.known import DRAFTS, shipped_draft
    try:
        m = manifest.read(bundle)
        if m.drafts or m.model.fingerprint is not None or not any(DRAFTS.glob("*.draft.npz")):
            return False
    except EdgedecError:
        return False                        # a broken bundle gets its own error when it is loaded
    return shipped_draft(model_fingerprint(load_source(default_source()))) is not None


def _sampler(a):
    from .sampling import SamplerConfig
    return SamplerConfig(temperature=a.temp, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p,
                         repetition_penalty=a.repeat_penalty, seed=a.seed)


def _load(a, window: int | None = None):
    """The model the flags describe; `window`: the eviction window when --kv-window is not given."""
    from .api import load
    return load(ensure_default_bundle(a.bundle), backend=a.backend, threads=a.threads, n_ctx=a.ctx,
                exact=getattr(a, "exact", None), kv=a.kv, kv_window=a.kv_window or window, kv_sinks=a.kv_sinks,
                adapter=getattr(a, "adapter", None))


def _spec(a, model):
    """The --mode's config: the bundle's tuned defaults, overridden by the flags given."""
    from dataclasses import fields, replace
    config = model.default_config(a.mode)
    names = {f.name for f in fields(config)}
    given = {}
    for flag, target in SPEC_FLAGS.items():
        value = getattr(a, flag)
        if value is None:
            continue
        name = target.get(a.mode) if isinstance(target, dict) else target
        if name not in names:
            raise EdgedecError(f"--{flag.replace('_', '-')} does not apply to --mode {a.mode}")
        given[name] = value
    return replace(config, **given)


def _notice(r) -> None:
    if r.notice:
        print(f"\nnote: {_flags(r.notice)}", file=sys.stderr)


def _flags(message) -> str:
    """A library message (EdgedecError or Notice) in this command's terms."""
    return message.render(FLAGS) if hasattr(message, "render") else str(message)


def _sources_line(sources: dict) -> str:
    n = sum(sources.values()) or 1
    return ", ".join(f"{k} {v / n:.0%}" for k, v in sorted(sources.items(), key=lambda kv: -kv[1]))


def _spec_line(d: dict) -> str:
    return (f"acceptance {d['acceptance_rate']:.0%}, {d['mean_accepted_per_verify']:.2f} accepted per verify, "
            f"{d['n_verify_calls']} verify calls, {d['n_plain_steps']} plain steps, drafted {d['drafted']}, "
            f"accepted {d['accepted']}, exit layers {d['exit_layers']}")


def cmd_generate(a) -> None:
    prompt = a.prompt if a.prompt is not None else sys.stdin.read()
    if not prompt.strip():
        raise EdgedecError("empty prompt: pass -p TEXT or pipe text on stdin")
    model = _load(a)
    kw = dict(system=a.system, chat=not a.raw, max_tokens=a.max_tokens, sampler=_sampler(a), stop=tuple(a.stop),
              mode=a.mode, spec=_spec(a, model), ignore_eos=a.ignore_eos)
    session = model.session()
    if a.json:
        r = session.generate(prompt, **kw)
        if r.notice:
            print(f"note: {_flags(r.notice)}", file=sys.stderr)
        print(json.dumps(r.to_dict()))
        return
    sources = {}
    for r in session.stream_generate(prompt, **kw):
        _notice(r)
        sources[r.source] = sources.get(r.source, 0) + 1
        print(r.text, end="", flush=True)
    print()
    print(f"[{r.n_prompt_tokens} prompt tokens at {r.prefill_tok_s:.0f} tok/s, "
          f"{r.n_new_tokens} new at {r.decode_tok_s:.1f} tok/s, {r.finish_reason}; "
          f"KV {session.backend.kv_bytes / 1e6:.1f} MB, {model.kv_bytes_per_token:.0f} B/token]", file=sys.stderr)
    if a.mode != "plain":
        print(f"[tokens from: {_sources_line(sources)}; {_spec_line(session.last_stats.to_dict())}]",
              file=sys.stderr)


def cmd_chat(a) -> None:
    # chat never stops at a full context: unless told otherwise it evicts down to half of it, as llama.cpp's
    # context shift does (the llama.cpp backend cannot evict: there a full context ends the answer)
    model = _load(a, window=a.ctx // 2 if a.backend == "onnxruntime" else None)
    session = model.session()
    spec = _spec(a, model)
    system = a.system
    messages = [{"role": "system", "content": system}] if system else []
    totals = {"turns": 0, "new_tokens": 0, "last": None, "sources": {}}
    adapter = model.adapter
    print("edgedec chat: /reset clears the conversation, /stats shows speed, /exit quits; "
          "Ctrl-C stops an answer." + (f" /adapter NAME|none switches among {', '.join(model.adapters)}."
                                       if model.adapters else ""), file=sys.stderr)
    while True:
        try:
            line = input(">>> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        cmd = line.strip()
        if cmd in ("/exit", "/quit"):
            return
        if cmd == "/reset":
            messages = messages[:1] if system else []
            session.reset()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if cmd.startswith("/adapter"):
            name = cmd.removeprefix("/adapter").strip()
            try:
                adapter = model.check_adapter(None if name in ("", "none") else name)
            except EdgedecError as e:
                print(f"({_flags(e)})", file=sys.stderr)
                continue
            print(f"(adapter {adapter or 'none'}; the conversation is re-read with it)", file=sys.stderr)
            continue
        if cmd == "/stats":
            r = totals["last"]
            if r is None:
                print("(no answer yet)", file=sys.stderr)
            else:
                st = session.stats
                evicted = f", {st.evicted} evicted" if st.evicted else ""
                print(f"turns {totals['turns']}, context {st.context_tokens} tokens{evicted} (cache of {st.n_ctx}), "
                      f"KV {st.kv_bytes / 1e6:.1f} MB in use of {st.cache_bytes / 1e6:.0f} MB, "
                      f"{st.kv_bytes_per_token:.0f} B/token ({model.kv.type}), "
                      f"last answer: {r.n_new_tokens} tokens at {r.decode_tok_s:.1f} tok/s, "
                      f"prompt {r.n_prompt_tokens} tokens at {r.prefill_tok_s:.0f} tok/s", file=sys.stderr)
                print(f"tokens of the last answer from: {_sources_line(totals['sources'])}", file=sys.stderr)
                if a.mode != "plain" and st.speculation:
                    print(f"mode {a.mode}: {_spec_line(st.speculation)}", file=sys.stderr)
            continue
        if not cmd:
            continue
        messages.append({"role": "user", "content": line})
        reply, r, sources = [], None, {}
        try:
            for r in session.stream_generate(messages=messages, max_tokens=a.max_tokens, sampler=_sampler(a),
                                             mode=a.mode, spec=spec, adapter=adapter):
                _notice(r)
                sources[r.source] = sources.get(r.source, 0) + 1
                reply.append(r.text)
                print(r.text, end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        print()
        messages.append({"role": "assistant", "content": "".join(reply)})
        if r is not None:
            totals["turns"] += 1
            totals["last"] = r
            totals["sources"] = sources
            print(f"[{r.n_new_tokens} tokens, {r.decode_tok_s:.1f} tok/s]", file=sys.stderr)


def cmd_info(a) -> None:
    b = read_bundle(ensure_default_bundle(a.bundle), verify_checksums=True)
    m = b.manifest
    c, q = m.config, m.quant
    size = sum(f.bytes for f in m.files.values())
    print(f"bundle     {b.path} (format {m.format} v{m.version}, {size / 1e6:.0f} MB, checksums ok)")
    print(f"model      {m.model.name} from {m.model.source}")
    print(f"arch       {c.architecture}: {c.n_layers} layers, hidden {c.hidden}, heads {c.n_heads}/"
          f"{c.n_kv_heads} kv, ffn {c.ffn}, vocab {c.vocab}, context {c.context}")
    ranges = ", ".join(f"{s.start}-{s.end - 1}" for s in m.segments)
    print(f"segments   {ranges} (+ head)")
    print(f"quant      {q.mode} (head {q.head}), worst tensor {q.worst.tensor} rel rms {q.worst.rel_rms or 0:.3g}")
    if q.calibration:
        print(f"calibration {q.calibration} (the int4 biases)")
    print(f"gguf       {m.gguf.file if m.gguf else 'none (llama.cpp backend unavailable)'}")
    for d in m.drafts:
        after = d.acceptance.get("after", {})
        print(f"draft      {d.design}, head {d.vocab_size} tokens, {d.steps} steps on {d.data_tokens} tokens; "
              f"validation top-1 code {after.get('code_top1', 0):.1%}, prose {after.get('prose_top1', 0):.1%}")
    if m.draft_model:
        d = m.draft_model
        print(f"draft model {d.name}: {d.n_layers} layers in {d.folder}/ (from {d.source}; --mode speculative)"
              f"{'' if d.gguf else ', no GGUF: onnxruntime only'}")
    for ad in m.adapters:
        how = "merged into the weights" if ad.merged else f"switchable (--adapter {ad.name})"
        print(f"adapter    {ad.name}: LoRA rank {ad.rank} on {', '.join(ad.modules)} in {ad.layers} layers, "
              f"scale {ad.scale:g}, {how}{'' if ad.gguf else ', no GGUF LoRA'}; from {ad.source}")
    if m.kv:
        print(f"kv ranges  calibrated on {m.kv.tokens} tokens of {m.kv.text} (int8/int4 caches)")
    print(f"drafts     {len(m.drafts)}, adapters {len(m.adapters)}, tuned self-spec {m.defaults.self_spec}")


def cmd_perplexity(a) -> None:
    from .perplexity import perplexity
    path = Path(a.file)
    if not path.is_file():
        raise EdgedecError(f"{path}: no such file; pass a text file")
    model = _load(a)
    res = perplexity(model, path.read_text(errors="replace"), window=a.window)
    if a.json:
        print(json.dumps(res))
    else:
        print(f"perplexity {res['perplexity']:.4f} over {res['n_tokens']} tokens "
              f"({res['n_windows']} windows of {res['window']}, {res['tok_s']:.0f} tok/s)")


def cmd_eval(a) -> None:
    from .evaluate import PROMPTS, evaluate, read_prompts
    if a.max_tokens < 1:
        raise EdgedecError("--max-tokens must be at least 1")
    prompts = read_prompts(a.prompts) if a.prompts else PROMPTS
    model = _load(a)
    spec = _spec(a, model)
    model.session().generate(prompts[0][1], max_tokens=4, mode=a.mode, spec=spec)   # settings checked, warm
    res = evaluate(model, prompts, a.mode, spec, a.max_tokens,
                   progress=lambda i, n: progress_bar("prompts", i, n) if sys.stderr.isatty() else None)
    if a.json:
        print(json.dumps(res, indent=1))
        return
    print(f"{a.mode} {res['settings']} on {res['prompts']} prompts, {res['tokens']} tokens, against plain greedy:")
    for kind, r in [("all", res)] + sorted(res.get("by_kind", {}).items()):
        print(f"  {kind:6s} agreement {r['agreement']:.1%}  perplexity {r['perplexity']:.3f} (plain "
              f"{r['plain_perplexity']:.3f})  {r['tok_s']:.1f} tok/s vs {r['plain_tok_s']:.1f} "
              f"({r['speedup']:.2f}x)  sources: {_sources_line(r['sources'])}")


def cmd_batch(a) -> None:
    from .batch_job import run
    t0 = time.time()

    def progress(done, tokens, seconds):
        if sys.stderr.isatty() or done % 10 == 0:
            rate = tokens / max(seconds, 1e-9)
            left = (total - done) * seconds / max(done, 1)
            sys.stderr.write(f"\r{done}/{total} requests, {rate:.1f} tok/s, ETA {left:.0f} s   ")
            sys.stderr.flush()

    def load():
        return _load(a)

    total = 0

    def count(n):
        nonlocal total
        total = n

    res = run(ensure_default_bundle(a.bundle), a.input, a.output, workers=a.workers, slots=a.slots,
              threads=a.threads, n_ctx=a.ctx, backend=a.backend, kv=a.kv, load=load, progress=progress,
              pending=count, ray=a.ray)
    sys.stderr.write("\n")
    print(json.dumps({**res, "wall_seconds": round(time.time() - t0, 1)}))


def cmd_serve(a) -> None:
    from .server import serve
    model = _load(a)
    model_id = a.model_id or model.bundle.path.name
    serve(model, model_id, a.host, a.port, a.slots, a.ctx, a.queue, a.api_key or os.environ.get("EDGEDEC_API_KEY"),
          log=lambda m: print(m, file=sys.stderr))


def _add_model_args(p, gen=True):
    p.add_argument("bundle", nargs="?", help="bundle directory (default: the default model's bundle)")
    p.add_argument("--backend", default=os.environ.get("EDGEDEC_BACKEND", "onnxruntime"),
                   help="onnxruntime (default) or llamacpp")
    p.add_argument("-t", "--threads", type=int, default=int(os.environ.get("EDGEDEC_THREADS", 2)))
    p.add_argument("--ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    p.add_argument("--kv", help="KV cache type: fp32 (default; a mobile bundle runs the one built in), fp16, int8 "
                   "or int4")
    p.add_argument("--kv-window", type=int, help="when the cache is full, keep the last W positions (and the "
                   "sinks) and go on (chat's default: half the context)")
    p.add_argument("--kv-sinks", type=int, help="with --kv-window: the first S positions always kept (default 4)")
    p.add_argument("--adapter", help="run with the bundle's LoRA adapter NAME (export --lora PATH=NAME)")
    if gen:
        p.add_argument("-s", "--system", help="system prompt")
        p.add_argument("-n", "--max-tokens", type=int, default=256)
        p.add_argument("--temp", type=float, default=0.0, help="temperature; 0 = greedy (default)")
        p.add_argument("--top-k", type=int, default=0)
        p.add_argument("--top-p", type=float, default=1.0)
        p.add_argument("--min-p", type=float, default=0.0)
        p.add_argument("--repeat-penalty", type=float, default=1.0)
        p.add_argument("--seed", type=int)
        p.add_argument("--mode", default="plain", help="plain (default), self-spec, lookup or speculative (with "
                       "the bundle's draft model; lossless); early-exit or entropy (lossy)")
        p.add_argument("--exit-layer", type=int, help="self-spec: draft with layers[0:E] (default: tuned, or "
                       "chosen per context among the bundle's cuts); early-exit: the one exit (default: every "
                       "cut from half the depth on); entropy: the small model is layers[0:E] + head")
        p.add_argument("--draft-len", type=int, help="speculation: most tokens drafted per round "
                       "(default: self-spec 4, lookup 8)")
        p.add_argument("--threshold", "--exit-threshold", "--entropy-threshold", dest="threshold", type=float,
                       help="self-spec: stop drafting below this top probability (default 0.3); early-exit: "
                       "exit where the entropy is below this many nats (default 0.5); entropy: the small "
                       "model writes while its rolling entropy is below this (default 1.0); 0 = never")
        p.add_argument("--entropy-window", type=int, help="entropy: tokens in the rolling entropy (default 4)")
        p.add_argument("--rollback-margin", type=float, help="entropy: roll back at the first small-model "
                       "token this many nats below the full model's best (default 1; 0 keeps only its choices)")
        p.add_argument("--small-run", type=int, help="entropy: most small-model tokens between catch-ups "
                       "(default 8)")
        p.add_argument("--lookup", action=argparse.BooleanOptionalAction, default=None,
                       help="self-spec: also use prompt-lookup drafts (default on)")
        p.add_argument("--draft", action=argparse.BooleanOptionalAction, default=None,
                       help="self-spec: draft with the bundle's trained draft when it has one (default on; "
                       "--exit-layer drafts with the model's own first layers instead)")
        p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                       help="speculation: fall back to plain decoding when it does not pay (default on)")
        p.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                       help="speculative modes: --exact always speculates, every step on the batched kernel "
                       "path (token for token `plain --exact`); --no-exact keeps plain steps on one-row kernels. "
                       "Default: per call, speculate on the batched path or decode plainly on one-row kernels, "
                       "whichever measured faster so far. plain: --exact pads steps to the batched path")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgedec", description="Fast offline decoding of small language models.",
                                 epilog="example: edgedec export && edgedec generate -p 'Name three rivers' --json")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="turn a GGUF file or Hugging Face folder into a bundle")
    p.add_argument("source", nargs="?", help=".gguf file or model folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("-o", "--output", help="bundle directory to write")
    p.add_argument("--quant", default="int4", help="int4 (default; 4-bit GGUF blocks kept exactly), int4-calibrated "
                   "or int4-mixed (faster, fitted on the calibration text; 4-bit GGUF sources only), int8 or fp32")
    p.add_argument("--cuts", help="layer cut points, e.g. 6,12,18,24 (default: every 6 layers)")
    p.add_argument("--draft", help="a trained draft file (.npz) from edgedec-distill to include (default: the "
                   "one shipped for the model, if any); or a separate draft model for --mode speculative: a "
                   ".gguf, a Hugging Face folder, or truncate:E (the model's first E layers, also as a GGUF)")
    p.add_argument("--no-draft", action="store_true", help="include no trained draft")
    p.add_argument("--kv-text", "--calibration-text", dest="kv_text",
                   help="text file to calibrate the int8/int4 KV caches and the int4-calibrated/-mixed weights on "
                   "(default: text from Python's standard library)")
    p.add_argument("--lora", action="append", default=[], metavar="PATH[=NAME]",
                   help="a LoRA adapter to include: a PEFT folder or a GGUF LoRA file (repeatable); switchable at "
                   "run time with --adapter NAME")
    p.add_argument("--merge", action="store_true", help="fold the --lora adapters into the weights instead")
    p.add_argument("--target", default="desktop", choices=["desktop", "mobile"],
                   help="mobile: ORT-format graphs for onnxruntime-android with an int8 KV cache built in, no GGUF "
                   "or drafts, and a size report (android_demo/)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("generate", help="complete one prompt")
    _add_model_args(p)
    p.add_argument("-p", "--prompt", help="prompt text (default: read stdin)")
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object with text, tokens and speeds")
    p.add_argument("--ignore-eos", action="store_true", help="go on past the end of the answer to --max-tokens")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="multi-turn chat in the terminal")
    _add_model_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("info", help="summarize a bundle")
    p.add_argument("bundle", nargs="?")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("eval", help="what a decoding mode costs in fidelity and gains in speed, against plain "
                       "greedy decoding")
    _add_model_args(p)
    p.add_argument("--prompts", help="prompts file: one per line, or JSON lines with \"prompt\" (and \"kind\"); "
                   "default: 8 built-in code and prose prompts")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval, max_tokens=96)

    p = sub.add_parser("batch", help="an offline job: a JSONL file of prompts in, a JSONL file of answers out "
                       "(resumable)")
    p.add_argument("input", help="JSONL: {\"id\": ..., \"prompt\": \"...\"} or {\"id\": ..., \"messages\": [...]}, "
                   "optional max_tokens, temperature, top_p, top_k, min_p, repetition_penalty, seed, stop")
    p.add_argument("-o", "--output", required=True, help="JSONL of answers; an existing one is resumed")
    p.add_argument("--bundle", help="bundle directory (default: the default model's bundle)")
    p.add_argument("--backend", default="onnxruntime", help=argparse.SUPPRESS)
    p.add_argument("-t", "--threads", type=int, default=int(os.environ.get("EDGEDEC_THREADS", 2)))
    p.add_argument("--ctx", type=int, default=2048, help="positions per sequence (default 2048)")
    p.add_argument("--kv", help="KV cache type: fp32 (default; a mobile bundle runs the one built in), fp16, int8 "
                   "or int4")
    p.add_argument("--slots", type=int, default=8, help="sequences decoded together per worker (default 8)")
    p.add_argument("--workers", type=int, default=1, help="worker processes, each with its own model "
                   "(default 1; the threads are shared out)")
    p.add_argument("--ray", nargs="?", const=None, default=False, metavar="ADDRESS",
                   help="run on a Ray cluster (HOST:PORT, or 'auto'); with no address, a local Ray instance. "
                   "--workers actors, each with its own model (needs pip install 'ray[data]')")
    p.set_defaults(func=cmd_batch, kv_window=None, kv_sinks=None)

    p = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions)")
    _add_model_args(p, gen=False)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--slots", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument("--queue", type=int, default=32, help="requests that may wait beyond the slots; more get 503")
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every request (or $EDGEDEC_API_KEY)")
    p.add_argument("--model-id", help="the model name clients send (default: the bundle's folder name)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("perplexity", help="perplexity of a text file")
    _add_model_args(p, gen=False)
    p.add_argument("file")
    p.add_argument("--window", "--ctx-window", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_perplexity)

    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.func, args)


def run_command(func, args) -> int:
    """Run a command; a domain error becomes one line on stderr (in this command's flags) and exit code 1."""
    try:
        func(args)
    except EdgedecError as e:
        print(f"edgedec: error: {_flags(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nedgedec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
