"""The TypeScript engine of the Android demo (android_demo/engine) against the Python runtime.

Python writes what the engine must reproduce (tokenizer ids for real text, chat-templated prompt ids,
greedy tokens of plain decoding, and of plain --exact for the engine's lookup, a two-turn chat) to a JSON file; `npm test` then runs the engine's own
tests (Node's test runner) on the same bundle with that reference. Needs npm; `npm ci` runs only when
node_modules is missing or older than package-lock.json (it then needs the npm registry).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ENGINE = Path(__file__).resolve().parent.parent / "android_demo" / "engine"
MAX_TOKENS = 32
CHAT_TOKENS = 16
UNICODE = ["naïve café, São Paulo — 東京 and Zürich 🙂👍🏽", "Ελληνικά, русский, עברית, हिन्दी: ∑ x² ≤ ∞"]

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("npm") is None, reason="npm is not installed")]


def write_reference(bundle: Path, lear: str, path: Path) -> dict:
    """The Python runtime's ids and greedy tokens for real prompts and text, as the engine's tests read them."""
    import edgedec
    from edgedec_tools.prompts import code_prompts, writing_prompts

    m = edgedec.load(bundle)
    prompts = code_prompts(3) + writing_prompts(3, max_chars=600)
    lines = [line for line in lear.splitlines() if line.strip()][:80]
    texts = [lear] + lines + code_prompts(5) + writing_prompts(5) + UNICODE
    greedy = [m.session().generate(p, max_tokens=MAX_TOKENS).tokens for p in prompts]   # fresh cache each
    exact = edgedec.load(bundle, exact=True)          # plain on the many-row path: what lookup must equal
    exact_greedy = [exact.session().generate(p, max_tokens=MAX_TOKENS).tokens for p in prompts]
    chat = m.session()
    turn1 = [{"role": "user", "content": prompts[3]}]
    r1 = chat.generate(messages=turn1, max_tokens=CHAT_TOKENS)
    turn2 = turn1 + [{"role": "assistant", "content": r1.text},
                     {"role": "user", "content": "Now say it in one sentence."}]
    r2 = chat.generate(messages=turn2, max_tokens=CHAT_TOKENS)
    ref = {
        "prompts": prompts,
        "templated_ids": [m.encode_prompt(p) for p in prompts],
        "greedy_tokens": greedy,
        "exact_greedy_tokens": exact_greedy,
        "max_tokens": MAX_TOKENS,
        "texts": texts,
        "text_ids": [m.tokenizer.encode(t) for t in texts],
        "chat": {"messages": [turn1, turn2], "ids": [m.encode_prompt(messages=t) for t in (turn1, turn2)],
                 "tokens": [r1.tokens, r2.tokens], "max_tokens": CHAT_TOKENS},
    }
    path.write_text(json.dumps(ref, ensure_ascii=False))
    return ref


def _npm(*args: str, env: dict | None = None, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["npm", *args], cwd=ENGINE, env=env, capture_output=True, text=True, timeout=timeout)


def _installed() -> bool:
    """node_modules is there and at least as new as package-lock.json (npm writes its own copy there)."""
    stamp = ENGINE / "node_modules" / ".package-lock.json"
    return stamp.is_file() and stamp.stat().st_mtime >= (ENGINE / "package-lock.json").stat().st_mtime


@pytest.mark.parametrize("which", ["int4_bundle", "mobile_bundle"])
def test_engine_matches_python(which, running_text, tmp_path, request):
    """The default bundle, and the mobile one (export --target mobile: ORT-format graphs, int8 cache)."""
    bundle = request.getfixturevalue(which)
    ref = write_reference(bundle, running_text, tmp_path / "reference.json")
    assert len(ref["prompts"]) >= 5
    if not _installed():
        p = _npm("ci", "--no-audit", "--no-fund", timeout=300)
        assert p.returncode == 0, f"npm ci failed:\n{p.stdout}\n{p.stderr}"
    env = dict(os.environ, EDGEDEC_BUNDLE=str(bundle), EDGEDEC_REFERENCE=str(tmp_path / "reference.json"))
    p = _npm("test", env=env, timeout=600)
    out = f"{p.stdout}\n{p.stderr}"
    assert p.returncode == 0, f"npm test failed:\n{out}"
    assert "set EDGEDEC_BUNDLE" not in out, f"engine tests skipped (their skip reason is in the output):\n{out}"
