"""Build a Hugging Face `tokenizers` tokenizer.json from GGUF metadata (or take a folder's own).

GGUF's "gpt2" tokenizer is byte-level BPE: `tokens` (byte-level strings), `merges` ("a b"), and
`token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte). Control tokens such as
<|im_start|> must be *special added tokens*, or chat prompts are split into pieces and the model answers
badly. The pre-tokenizer depends on `tokenizer.ggml.pre`, mirroring llama.cpp's table.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from edgedec.errors import SourceError, UnsupportedModelError

# GPT-2's split regex, and the digit rules some models add in front of it (llama.cpp, llama-vocab.cpp).
_GPT2_PRE = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_DIGITS = {"type": "Digits", "individual_digits": True}
_PRE_TOKENIZERS = {
    "default": [_GPT2_PRE],
    "gpt2": [_GPT2_PRE],
    "smollm": [_DIGITS, _GPT2_PRE],
    "starcoder": [_DIGITS, _GPT2_PRE],
}


@dataclass(frozen=True)
class TokenizerSpec:
    json: str                  # tokenizer.json text
    bos_id: int | None         # beginning-of-sequence token
    eos_ids: tuple[int, ...]   # tokens that end a reply
    add_bos: bool              # prepend bos to every prompt


def tokenizer_from_gguf(meta: dict) -> TokenizerSpec:
    pre = meta.get("pre", "default")
    if pre not in _PRE_TOKENIZERS:
        raise UnsupportedModelError(f"GGUF pre-tokenizer '{pre}' is not supported; "
                                    f"supported: {', '.join(sorted(_PRE_TOKENIZERS))}")
    tokens = [str(t) for t in meta["tokens"]]
    types = [int(t) for t in meta.get("token_type", [1] * len(tokens))]
    merges = [str(m) for m in meta.get("merges", [])]
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": ty == 3}
        for i, (tok, ty) in enumerate(zip(tokens, types)) if ty in (3, 4)
    ]
    steps = _PRE_TOKENIZERS[pre]
    spec = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": steps[0] if len(steps) == 1 else {"type": "Sequence", "pretokenizers": steps},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
            "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": {t: i for i, t in enumerate(tokens)},
            "merges": [m.split(" ", 1) for m in merges],
        },
    }
    eos = meta.get("eos_token_id")
    eos_ids = {int(eos)} if eos is not None else set()
    if meta.get("eot_token_id") is not None:
        eos_ids.add(int(meta["eot_token_id"]))
    bos = meta.get("bos_token_id")
    return TokenizerSpec(
        json=json.dumps(spec, ensure_ascii=False),
        bos_id=int(bos) if bos is not None else None,
        eos_ids=tuple(sorted(eos_ids)),
        add_bos=bool(meta.get("add_bos_token", False)),
    )


def tokenizer_from_hf(folder: Path) -> tuple[TokenizerSpec, str | None]:
    """A Hugging Face folder's own tokenizer.json, special ids, and chat template."""
    tj = folder / "tokenizer.json"
    if not tj.exists():
        raise SourceError(f"{folder} has no tokenizer.json; save the tokenizer with the model "
                          "(tokenizer.save_pretrained) and export again")
    text = tj.read_text()
    vocab = {t["content"]: t["id"] for t in json.loads(text).get("added_tokens", [])}
    vocab_model = json.loads(text)["model"].get("vocab", {})

    def tid(tok):
        if isinstance(tok, dict):
            tok = tok.get("content")
        if tok is None:
            return None
        return vocab.get(tok, vocab_model.get(tok))

    tc_path = folder / "tokenizer_config.json"
    tc = json.loads(tc_path.read_text()) if tc_path.exists() else {}
    gen_path = folder / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else {}
    eos = gen.get("eos_token_id", tid(tc.get("eos_token")))
    eos_ids = tuple(sorted({int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}))
    template = tc.get("chat_template")
    jt = folder / "chat_template.jinja"
    if template is None and jt.exists():
        template = jt.read_text()
    return TokenizerSpec(json=text, bos_id=tid(tc.get("bos_token")), eos_ids=eos_ids,
                         add_bos=bool(tc.get("add_bos_token", False))), template
