"""Many conversations on one loaded model: sessions keep their own state, share the weights, and give
exactly what each conversation gives alone (interleaved turn by turn, or from two threads at once)."""
import gc
import json
import subprocess
import sys
import threading
import weakref

import pytest

import edgedec
from edgedec.errors import SessionBusyError

CONVERSATIONS = [["What is the capital of France?", "And how many people live there?"],
                 ["Write a haiku about the sea.", "Now one about mountains."]]


def run_turns(session, turns, max_tokens=24):
    """Play a conversation into `session` one turn at a time (a generator: one answer per next())."""
    messages = []
    for question in turns:
        messages.append({"role": "user", "content": question})
        r = session.generate(messages=messages, max_tokens=max_tokens)
        messages.append({"role": "assistant", "content": r.text})
        yield r.tokens


@pytest.fixture(scope="module")
def model(int4_bundle):
    return edgedec.load(int4_bundle, n_ctx=512)


@pytest.fixture(scope="module")
def alone(model):
    """Each conversation, run alone in a fresh session."""
    return [list(run_turns(model.session(), turns)) for turns in CONVERSATIONS]


def interleave(model):
    """Both conversations in two sessions: a's turn 1, b's turn 1, a's turn 2, b's turn 2."""
    a, b = model.session(), model.session()
    play_a, play_b = run_turns(a, CONVERSATIONS[0]), run_turns(b, CONVERSATIONS[1])
    got = [[], []]
    for _ in range(2):
        got[0].append(next(play_a))
        got[1].append(next(play_b))
    assert a.stats.turns == b.stats.turns == 2 and a.stats.context_tokens != b.stats.context_tokens
    return got


def test_interleaved_sessions_equal_each_alone(model, alone):
    assert interleave(model) == alone


def test_llamacpp_sessions_take_turns_in_its_one_context(int4_bundle):
    pytest.importorskip("llama_cpp")
    model = edgedec.load(int4_bundle, backend="llamacpp", n_ctx=512)
    alone = [list(run_turns(model.session(), turns)) for turns in CONVERSATIONS]
    assert interleave(model) == alone


def test_sessions_on_two_threads_equal_each_alone(model, alone):
    got = [None, None]

    def converse(i):
        got[i] = list(run_turns(model.session(), CONVERSATIONS[i]))

    threads = [threading.Thread(target=converse, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == alone


def test_a_session_streams_one_answer_at_a_time(model):
    s = model.session()
    first = s.stream_generate("Count to ten.", max_tokens=8)
    next(first)
    with pytest.raises(SessionBusyError, match="still streaming"):
        next(s.stream_generate("Hello", max_tokens=4))
    first.close()
    assert s.generate("Hello", max_tokens=4).n_new_tokens == 4
    assert model.session().generate("Hello", max_tokens=4).n_new_tokens == 4   # other sessions never wait


def test_reset_frees_the_cache(model):
    s = model.session()
    s.generate("Tell me about rivers.", max_tokens=8)
    assert s.stats.cache_bytes > 0 and s.stats.context_tokens > 0
    buffer = weakref.ref(s.backend.cache.keys[0])
    s.reset()
    gc.collect()
    assert s.stats.cache_bytes == 0 and s.stats.context_tokens == 0 and buffer() is None
    assert s.generate("Tell me about rivers.", max_tokens=4).n_new_tokens == 4   # a fresh cache on demand


_RSS = """
import json, sys
import edgedec

def rss():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) * 1024

model = edgedec.load(sys.argv[1], n_ctx=256)
sessions = [model.session()]
sessions[0].generate("Tell me about rivers.", max_tokens=200)
one = rss()
for _ in range(3):
    sessions.append(model.session())
    sessions[-1].generate("Tell me about rivers.", max_tokens=200)
four = rss()
print(json.dumps({"one": one, "four": four, "cache": sessions[0].backend.cache_bytes}))
"""


def test_sessions_share_the_weights(int4_bundle):
    """RSS with four sessions is RSS with one plus three KV caches (and some slack): not four copies of
    the weights."""
    out = subprocess.run([sys.executable, "-c", _RSS, str(int4_bundle)], capture_output=True, text=True, check=True)
    m = json.loads(out.stdout.strip().splitlines()[-1])
    weights = sum(f.stat().st_size for f in int4_bundle.glob("*.onnx.data"))
    extra = m["four"] - m["one"]
    print(f"\nRSS one session {m['one'] / 1e6:.0f} MB, four {m['four'] / 1e6:.0f} MB (+{extra / 1e6:.1f} MB); "
          f"one KV cache {m['cache'] / 1e6:.1f} MB, the weights {weights / 1e6:.0f} MB")
    assert extra <= 3 * m["cache"] + 24e6
    assert extra < weights / 2
