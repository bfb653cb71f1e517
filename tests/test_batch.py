"""Batched decoding (runtimes/ort_batch.py, edgedec/batching.py) and the batch job (edgedec/batch_job.py):
every sequence in a batch gives what it gives alone, sequences join and leave, and a killed job resumes.
Real model, real prompts."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

import edgedec
from edgedec.batching import Request
from edgedec.sampling import SamplerConfig
from edgedec_tools.prompts import code_prompts, writing_prompts

from conftest import run_cli


@pytest.fixture(scope="module")
def model(int4_bundle):
    return edgedec.load(int4_bundle, n_ctx=1024)


def drain(batcher) -> list:
    events = []
    while not batcher.idle:
        events.extend(batcher.step())
    return events


def test_each_sequence_in_a_batch_gives_its_solo_output(model):
    """12 requests through 4 rows: they join and leave at different steps, with their own limits and stop
    strings, and each one's tokens, text and finish reason are its solo plain run's (one-row kernels, which
    a batched step matches bit for bit: runtimes/ort_batch.py)."""
    prompts = code_prompts(6) + writing_prompts(6)
    requests = [Request(prompt=p, max_tokens=12 + 5 * i, stop=("\n\n",) if i % 3 == 0 else ())
                for i, p in enumerate(prompts)]
    batcher = model.batcher(slots=4)
    tickets = [batcher.submit(r) for r in requests]
    drain(batcher)
    for t, r in zip(tickets, requests):
        solo = model.session().generate(r.prompt, max_tokens=r.max_tokens, stop=r.stop)
        assert (t.tokens, t.text, t.finish_reason) == (solo.tokens, solo.text, solo.finish_reason), t.id
    assert {t.finish_reason for t in tickets} >= {"length"}


def test_sampling_with_a_seed_matches_the_solo_run(model):
    prompts = writing_prompts(3)
    cfgs = [SamplerConfig(temperature=0.8, top_p=0.9, seed=s) for s in (1, 2, 3)]
    batcher = model.batcher(slots=3)
    tickets = [batcher.submit(Request(prompt=p, max_tokens=20, sampler=c)) for p, c in zip(prompts, cfgs)]
    drain(batcher)
    for t, p, c in zip(tickets, prompts, cfgs):
        assert t.tokens == model.session().generate(p, max_tokens=20, sampler=c).tokens


def test_a_long_prompt_is_prefilled_in_chunks_while_others_decode(model):
    batcher = model.batcher(slots=2, prefill_chunk=16)
    short = batcher.submit(Request(prompt="Count from one to twenty.", max_tokens=40))
    batcher.step()                                          # short's prompt (under 2 chunks) goes in first
    batcher.step()
    long_prompt = " ".join(writing_prompts(4))[:3000]
    long = batcher.submit(Request(prompt=long_prompt, max_tokens=8))
    while not long.tokens:
        n = len(short.tokens)
        batcher.step()
        assert short.done or len(short.tokens) == n + 1       # short got a token on every step
    assert len(long.ids) > 16 * 5
    drain(batcher)
    assert long.tokens == model.session().generate(long_prompt, max_tokens=8).tokens


def test_requests_that_arrive_together_start_decoding_together(model):
    """The prefill budget spans prompts: four short ones submitted at once all give a token on the first
    step; with a budget of 16, a 40-token prompt goes in over several steps in pieces of 2 or more."""
    prompts = ["Name a river.", "Name a city.", "Count to three.", "Say hello."]
    batcher = model.batcher(slots=4, prefill_chunk=256)
    tickets = [batcher.submit(Request(prompt=p, max_tokens=4)) for p in prompts]
    assert sum(len(t.ids) for t in tickets) < 256
    batcher.step()
    assert [len(t.tokens) for t in tickets] == [1, 1, 1, 1]
    batcher = model.batcher(slots=2, prefill_chunk=16)
    fed = []
    real = batcher.runner.prefill
    batcher.runner.prefill = lambda slot, tokens: fed.append(len(tokens)) or real(slot, tokens)
    ticket = batcher.submit(Request(prompt=list(range(1000, 1041)), max_tokens=3))
    steps = 0
    while not ticket.tokens:
        batcher.step()
        steps += 1
    assert sum(fed) == 41 and min(fed) >= 2 and max(fed) <= 16 and steps == len(fed) == 3
    drain(batcher)
    assert ticket.tokens == model.session().generate(list(range(1000, 1041)), max_tokens=3).tokens


def test_cancel_frees_the_row(model):
    batcher = model.batcher(slots=1)
    a = batcher.submit(Request(prompt="Tell me a story.", max_tokens=200))
    b = batcher.submit(Request(prompt="Name a river.", max_tokens=6))
    for _ in range(5):
        batcher.step()
    assert a.tokens and not b.tokens
    batcher.cancel(a)
    drain(batcher)
    assert a.finish_reason == "cancelled" and len(a.tokens) < 200
    assert b.tokens == model.session().generate("Name a river.", max_tokens=6).tokens


def test_batches_run_on_an_int8_cache(int4_bundle):
    m = edgedec.load(int4_bundle, n_ctx=512, kv="int8")
    batcher = m.batcher(slots=2)
    prompts = ["Name three rivers.", "Write a haiku about rain."]
    tickets = [batcher.submit(Request(prompt=p, max_tokens=16)) for p in prompts]
    drain(batcher)
    for t, p in zip(tickets, prompts):
        assert t.tokens == m.session().generate(p, max_tokens=16).tokens


def test_prompt_longer_than_the_context_is_refused(model):
    batcher = model.batcher(slots=2, n_ctx=64)
    with pytest.raises(edgedec.EdgedecError, match="context holds 64"):
        batcher.submit(Request(prompt="word " * 200))


def _jobs(path, n, extra=()):
    lines = [json.dumps({"id": f"q{i}", "prompt": f"Name {i % 7 + 2} things that are blue.", "max_tokens": 12})
             for i in range(n)]
    path.write_text("\n".join(list(lines) + list(extra)) + "\n")


def _ids(path) -> list:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def test_batch_job_survives_kill_9_and_a_torn_line(int4_bundle, tmp_path):
    src, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    _jobs(src, 40, extra=["{broken", json.dumps({"id": "q3", "prompt": "a duplicate id"})])
    cmd = [sys.executable, "-m", "edgedec.cli", "batch", str(src), "-o", str(out), "--bundle", str(int4_bundle),
           "--slots", "4"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 6):
        time.sleep(0.2)
    p.send_signal(signal.SIGKILL)
    p.wait()
    first = _ids(out)
    assert 6 <= len(first) < 40
    with open(out, "a") as f:                                  # a torn last line, as a kill mid-write leaves
        f.write('{"id": "q39", "text": "half a li')
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ids = _ids(out)
    assert sorted(ids) == sorted(f"q{i}" for i in range(40)) and len(ids) == 40
    assert ids[: len(first)] == first                          # the first run's lines are untouched
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["skipped_done"] == len(first) and summary["bad_lines"] == 2
    errors = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert [e["line"] for e in errors] == [41, 42]
    line = json.loads(out.read_text().splitlines()[0])
    assert set(line) == {"id", "text", "prompt_tokens", "completion_tokens", "finish_reason"}


def test_batch_job_with_two_workers_matches_one(int4_bundle, tmp_path):
    src = tmp_path / "in.jsonl"
    _jobs(src, 8)
    for name, workers in (("one", "1"), ("two", "2")):
        r = run_cli("batch", str(src), "-o", str(tmp_path / f"{name}.jsonl"), "--bundle", int4_bundle,
                    "--workers", workers)
        assert r.returncode == 0, r.stderr
    one = {json.loads(x)["id"]: json.loads(x)["text"] for x in (tmp_path / "one.jsonl").read_text().splitlines()}
    two = {json.loads(x)["id"]: json.loads(x)["text"] for x in (tmp_path / "two.jsonl").read_text().splitlines()}
    assert one == two and len(one) == 8


def test_batch_bad_paths_get_one_line(int4_bundle, tmp_path):
    src = tmp_path / "in.jsonl"
    _jobs(src, 2)
    blocked = tmp_path / "file"
    blocked.write_text("x")
    for args, words in (([str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")], "cannot read"),
                        ([str(src), "-o", str(blocked / "o.jsonl")], "cannot write")):
        r = run_cli("batch", *args, "--bundle", int4_bundle)
        assert r.returncode == 1 and words in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not os.path.exists(tmp_path / "o.jsonl")


def test_ray_run_equals_the_local_run(int4_bundle, tmp_path):
    """Ray Data with an actor pool on a local Ray instance: the same answers as the local run."""
    ray = pytest.importorskip("ray")
    from edgedec.batch_job import run
    src = tmp_path / "in.jsonl"
    _jobs(src, 6)
    r = run_cli("batch", str(src), "-o", str(tmp_path / "local.jsonl"), "--bundle", int4_bundle, "--slots", "4")
    assert r.returncode == 0, r.stderr
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        res = run(int4_bundle, src, tmp_path / "ray.jsonl", slots=4, threads=2, n_ctx=1024, ray=None)
    finally:
        ray.shutdown()
    assert res["requests"] == 6
    texts = [{json.loads(x)["id"]: json.loads(x)["text"] for x in (tmp_path / f).read_text().splitlines()}
             for f in ("local.jsonl", "ray.jsonl")]
    assert texts[0] == texts[1] and len(texts[0]) == 6


def test_a_ray_address_that_does_not_answer_gets_one_line(int4_bundle, tmp_path):
    pytest.importorskip("ray")
    src = tmp_path / "in.jsonl"
    _jobs(src, 2)
    r = run_cli("batch", str(src), "-o", str(tmp_path / "o.jsonl"), "--bundle", int4_bundle, "--ray", "127.0.0.1:9")
    assert r.returncode == 1 and "does not answer" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
