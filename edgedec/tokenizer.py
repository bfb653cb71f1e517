"""Tokenizer, chat template, and streaming detokenization.

Streaming never prints a broken UTF-8 character: byte-level BPE can split one character over several
tokens, so text is only released once the decoded tail no longer ends in U+FFFD (the replacement
character a partial byte sequence decodes to).
"""
from __future__ import annotations

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer as HFTokenizer

from .errors import BundleError, EdgedecError

_FALLBACK_TEMPLATE = (  # ChatML, for models that ship without a template
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class Tokenizer:
    def __init__(self, bundle):
        t = bundle.manifest.tokenizer
        try:
            self.hf = HFTokenizer.from_file(str(bundle.file(t.file)))
        except Exception as e:
            raise BundleError(f"{bundle.path}: tokenizer.json is unreadable ({e}); export the bundle again") from None
        self.bos_id = t.bos_id
        self.eos_ids = frozenset(t.eos_ids)
        self.add_bos = t.add_bos
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self.template = env.from_string(bundle.manifest.chat_template or _FALLBACK_TEMPLATE)

    def encode(self, text: str) -> list[int]:
        ids = self.hf.encode(text, add_special_tokens=False).ids
        if self.add_bos and self.bos_id is not None and (not ids or ids[0] != self.bos_id):
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.hf.decode(ids, skip_special_tokens=False)

    def token_text(self, i: int) -> str:
        return self.hf.id_to_token(i) or ""

    def render_chat(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        bos = self.token_text(self.bos_id) if self.bos_id is not None else ""
        eos = self.token_text(min(self.eos_ids)) if self.eos_ids else ""
        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                        bos_token=bos, eos_token=eos)
        except TemplateError as e:
            raise EdgedecError(f"the model's chat template failed: {e}") from None


def _raise(msg):
    raise TemplateError(msg)


class StreamDecoder:
    """Turns a growing list of token ids into text deltas that never split a UTF-8 character."""

    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.prefix = 0   # ids[prefix:read] is context for decoding, already printed
        self.read = 0     # ids[read:] are not printed yet

    def push(self, token: int) -> str:
        self.ids.append(token)
        before = self.tok.decode(self.ids[self.prefix:self.read])
        now = self.tok.decode(self.ids[self.prefix:])
        if now.endswith("\ufffd") or len(now) <= len(before):
            return ""                       # an incomplete character: wait for more tokens
        self.prefix, self.read = self.read, len(self.ids)
        return now[len(before):]

    def flush(self) -> str:
        """Whatever is left (at the end of generation), even an incomplete character."""
        rest = self.tok.decode(self.ids[self.prefix:])[len(self.tok.decode(self.ids[self.prefix:self.read])):]
        self.prefix = self.read = len(self.ids)
        return rest


class TextStream:
    """A reply's text as its tokens arrive: UTF-8-safe pieces (StreamDecoder), cut at the first stop string,
    and holding back what might still become one."""

    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...] = ()):
        self.decoder = StreamDecoder(tokenizer)
        self.stop = stop
        self.pending = ""         # decoded, not handed out yet

    def push(self, token: int, eos: bool = False) -> bool:
        """Add a token (`eos`: the model's end of turn, whose text is not part of the reply); True when the
        reply ends here (end of turn or a stop string)."""
        self.pending += self.decoder.flush() if eos else self.decoder.push(token)
        cut = find_stop(self.pending, self.stop)
        if cut is not None:
            self.pending = self.pending[:cut]
            return True
        return eos

    def take(self, final: bool = False, stopped: bool = False) -> str:
        """The text that is safe to hand out now; with `final`, all of it (and, unless the reply `stopped`,
        what the decoder still holds)."""
        if final:
            text = self.pending + ("" if stopped else self.decoder.flush())
            self.pending = ""
            return text
        hold = stop_prefix_len(self.pending, self.stop)
        text, self.pending = self.pending[: len(self.pending) - hold], self.pending[len(self.pending) - hold:]
        return text


def find_stop(text: str, stops) -> int | None:
    """Where the first stop string in `text` starts, or None."""
    hits = [text.find(s) for s in stops if s and s in text]
    return min(hits) if hits else None


def stop_prefix_len(text: str, stops) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best
