"""The `edgedec` command: a thin layer over the library. Domain errors become one line on stderr.

    edgedec export                      # the default model -> ~/.cache/edgedec/SmolLM2-135M-Instruct-int4
    edgedec chat                        # talk to it (exports it first if needed)
    edgedec generate -p "Hello" --json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .bundle import default_bundle_path, read_manifest
from .errors import EdgedecError


def _progress(label: str, i: int, n: int) -> None:
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
    elif not a.source and a.quant == "int4":
        out = default_bundle_path()
    else:
        out = default_bundle_path().with_name(f"{source.stem}-{a.quant}")
    path, manifest = export_bundle(source, out, quant=a.quant, cuts=a.cuts, progress=_progress)
    w = manifest["quant"]["worst"]
    if w.get("tensor"):
        print(f"worst quantization error: {w['tensor']}: max |dw| {w['max_abs']:.3g}, "
              f"mean |dw| {w['mean_abs']:.3g}, relative rms {w['rel_rms']:.3g}", file=sys.stderr)
    print(path)


def _ensure_default_bundle(path) -> Path:
    if path:
        return Path(path)
    p = default_bundle_path()
    if not (p / "edgedec.json").exists():
        from edgedec.export.bundle_writer import export_bundle
        print(f"no default bundle yet; exporting the default model to {p} (about a minute, once)", file=sys.stderr)
        export_bundle(default_source(), p, progress=_progress)
    return p


def _sampler(a):
    from .sampling import SamplerConfig
    return SamplerConfig(temperature=a.temp, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p,
                         repetition_penalty=a.repeat_penalty, seed=a.seed)


def _load(a):
    from .api import load
    return load(_ensure_default_bundle(a.bundle), backend=a.backend, threads=a.threads, n_ctx=a.ctx,
                exact=getattr(a, "exact", None))


def _spec(a, model):
    """--mode options over the bundle's tuned defaults."""
    from dataclasses import replace
    given = {"exit_layer": a.exit_layer, "k_max": a.draft_len, "threshold": a.threshold,
             "lookup": a.lookup, "adaptive": a.adaptive}
    return replace(model.default_spec(), **{k: v for k, v in given.items() if v is not None})


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
              mode=a.mode, spec=_spec(a, model))
    if a.json:
        r = model.generate(prompt, **kw)
        if r.notice:
            print(f"note: {r.notice}", file=sys.stderr)
        print(json.dumps(r.to_dict()))
        return
    for r in model.stream_generate(prompt, **kw):
        if r.notice:
            print(f"\nnote: {r.notice}", file=sys.stderr)
        print(r.text, end="", flush=True)
    print()
    print(f"[{r.n_prompt_tokens} prompt tokens at {r.prefill_tok_s:.0f} tok/s, "
          f"{r.n_new_tokens} new at {r.decode_tok_s:.1f} tok/s, {r.finish_reason}]", file=sys.stderr)
    if a.mode != "plain":
        print(f"[{_spec_line(model.last_stats.to_dict())}]", file=sys.stderr)


def cmd_chat(a) -> None:
    model = _load(a)
    system = a.system
    messages = [{"role": "system", "content": system}] if system else []
    totals = {"turns": 0, "new_tokens": 0, "last": None}
    print("edgedec chat: /reset clears the conversation, /stats shows speed, /exit quits; "
          "Ctrl-C stops an answer.", file=sys.stderr)
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
            model.reset()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if cmd == "/stats":
            r = totals["last"]
            if r is None:
                print("(no answer yet)", file=sys.stderr)
            else:
                print(f"turns {totals['turns']}, context {model.backend.length}/{model.n_ctx} tokens, "
                      f"last answer: {r.n_new_tokens} tokens at {r.decode_tok_s:.1f} tok/s, "
                      f"prompt {r.n_prompt_tokens} tokens at {r.prefill_tok_s:.0f} tok/s", file=sys.stderr)
                if a.mode != "plain":
                    print(f"mode {a.mode}: {_spec_line(model.last_stats.to_dict())}", file=sys.stderr)
            continue
        if not cmd:
            continue
        messages.append({"role": "user", "content": line})
        reply, r = [], None
        try:
            for r in model.stream_generate(messages=messages, max_tokens=a.max_tokens, sampler=_sampler(a),
                                           mode=a.mode, spec=_spec(a, model)):
                if r.notice:
                    print(f"\nnote: {r.notice}", file=sys.stderr)
                reply.append(r.text)
                print(r.text, end="", flush=True)
        except KeyboardInterrupt:
            print(" [stopped]", end="")
        print()
        messages.append({"role": "assistant", "content": "".join(reply)})
        if r is not None:
            totals["turns"] += 1
            totals["last"] = r
            print(f"[{r.n_new_tokens} tokens, {r.decode_tok_s:.1f} tok/s]", file=sys.stderr)


def cmd_info(a) -> None:
    b = read_manifest(_ensure_default_bundle(a.bundle), verify_checksums=True)
    m = b.manifest
    c = m["config"]
    q = m["quant"]
    size = sum(f["bytes"] for f in m["files"].values())
    print(f"bundle     {b.path} (format {m['format']} v{m['version']}, {size / 1e6:.0f} MB, checksums ok)")
    print(f"model      {m['model']['name']} from {m['model']['source']}")
    print(f"arch       {c['architecture']}: {c['n_layers']} layers, hidden {c['hidden']}, heads {c['n_heads']}/"
          f"{c['n_kv_heads']} kv, ffn {c['ffn']}, vocab {c['vocab']}, context {c['context']}")
    ranges = ", ".join(f"{s['start']}-{s['end'] - 1}" for s in m["segments"])
    print(f"segments   {ranges} (+ head)")
    print(f"quant      {q['mode']} (head {q.get('head')}), worst tensor {q['worst'].get('tensor')} "
          f"rel rms {q['worst'].get('rel_rms', 0):.3g}")
    print(f"gguf       {m['gguf']['file'] if m.get('gguf') else 'none (llama.cpp backend unavailable)'}")
    print(f"drafts     {len(m.get('drafts', []))}, adapters {len(m.get('adapters', []))}, defaults {m.get('defaults')}")


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


def _add_model_args(p, gen=True):
    p.add_argument("bundle", nargs="?", help="bundle directory (default: the default model's bundle)")
    p.add_argument("--backend", default=os.environ.get("EDGEDEC_BACKEND", "onnxruntime"),
                   help="onnxruntime (default) or llamacpp")
    p.add_argument("-t", "--threads", type=int, default=int(os.environ.get("EDGEDEC_THREADS", 2)))
    p.add_argument("--ctx", type=int, default=2048, help="context length in tokens (default 2048)")
    if gen:
        p.add_argument("-s", "--system", help="system prompt")
        p.add_argument("-n", "--max-tokens", type=int, default=256)
        p.add_argument("--temp", type=float, default=0.0, help="temperature; 0 = greedy (default)")
        p.add_argument("--top-k", type=int, default=0)
        p.add_argument("--top-p", type=float, default=1.0)
        p.add_argument("--min-p", type=float, default=0.0)
        p.add_argument("--repeat-penalty", type=float, default=1.0)
        p.add_argument("--seed", type=int)
        p.add_argument("--mode", default="plain", help="plain (default), self-spec or lookup")
        p.add_argument("--exit-layer", type=int, help="self-spec: draft with layers[0:E] (default: tuned, or "
                       "chosen per context among the bundle's cuts)")
        p.add_argument("--draft-len", type=int, help="speculation: most tokens drafted per round (default 4)")
        p.add_argument("--threshold", type=float, help="self-spec: stop drafting below this top probability")
        p.add_argument("--lookup", action=argparse.BooleanOptionalAction, default=None,
                       help="self-spec: also use prompt-lookup drafts (default on)")
        p.add_argument("--adaptive", action=argparse.BooleanOptionalAction, default=None,
                       help="speculation: fall back to plain decoding when it does not pay (default on)")
        p.add_argument("--exact", action=argparse.BooleanOptionalAction, default=None,
                       help="speculative modes: --exact always speculates, every step on the batched kernel "
                       "path (token for token `plain --exact`); --no-exact keeps plain steps on one-row kernels. "
                       "Default: per call, speculate on the batched path or decode plainly on one-row kernels, "
                       "whichever measured faster so far. plain: --exact pads steps to the batched path")


def _add_measure_args(p, max_tokens: int, prompts: int, prompts_help: str) -> None:
    """What `bench` and `tune` share: the bundle, threads, tokens per run, prompts, and the results folder."""
    p.add_argument("bundle", nargs="?")
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("-n", "--max-tokens", type=int, default=max_tokens)
    p.add_argument("--prompts", type=int, default=prompts, help=prompts_help)
    p.add_argument("--out", default="bench/results", help="where the JSON and PNG go")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edgedec", description="Fast offline decoding of small language models.",
                                 epilog="example: edgedec export && edgedec generate -p 'Name three rivers' --json")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("export", help="turn a GGUF file or Hugging Face folder into a bundle")
    p.add_argument("source", nargs="?", help=".gguf file or model folder (default: SmolLM2-135M-Instruct)")
    p.add_argument("-o", "--output", help="bundle directory to write")
    p.add_argument("--quant", default="int4", help="int4 (default), int8 or fp32")
    p.add_argument("--cuts", help="layer cut points, e.g. 6,12,18,24 (default: every 6 layers)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("generate", help="complete one prompt")
    _add_model_args(p)
    p.add_argument("-p", "--prompt", help="prompt text (default: read stdin)")
    p.add_argument("--raw", action="store_true", help="do not apply the chat template")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object with text, tokens and speeds")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("chat", help="multi-turn chat in the terminal")
    _add_model_args(p)
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("info", help="summarize a bundle")
    p.add_argument("bundle", nargs="?")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("perplexity", help="perplexity of a text file")
    _add_model_args(p, gen=False)
    p.add_argument("file")
    p.add_argument("--window", "--ctx-window", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_perplexity)

    p = sub.add_parser("bench", help="tok/s of edgedec and llama.cpp on the same GGUF, same threads")
    _add_measure_args(p, max_tokens=128, prompts=8, prompts_help="--modes: prompts per set (default 8)")
    p.add_argument("--runs", type=int, default=5, help="repetitions; medians are reported (default 5)")
    p.add_argument("--modes", action="store_true", help="compare decoding modes on code and prose prompts")
    p.set_defaults(func=lambda a: __import__("edgedec.bench_modes" if a.modes else "edgedec.bench",
                                             fromlist=["main"]).main(a))

    p = sub.add_parser("tune", help="sweep self-spec settings on this device; store the best in the bundle")
    _add_measure_args(p, max_tokens=48, prompts=3, prompts_help="prompts per set, code and prose (default 3)")
    p.set_defaults(func=lambda a: __import__("edgedec.tune", fromlist=["main"]).main(a))
    return ap


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except EdgedecError as e:
        print(f"edgedec: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nedgedec: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
