"""`edgedec serve` against the official `openai` client and raw HTTP, on a real server on 127.0.0.1."""
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
from openai import APIStatusError, OpenAI

from conftest import run_cli

MODEL = "SmolLM2-135M-Instruct-int4"
CHAT = [{"role": "user", "content": "Name three rivers in Europe."}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(bundle, *args) -> tuple[subprocess.Popen, str]:
    port = free_port()
    p = subprocess.Popen([sys.executable, "-m", "edgedec.cli", "serve", str(bundle), "--port", str(port),
                          "--ctx", "1024", "--model-id", MODEL, *args],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if p.poll() is not None:
            raise RuntimeError(p.stderr.read())
        try:
            if httpx.get(url + "/health", headers={"Authorization": "Bearer k"}, timeout=1).status_code < 500:
                return p, url
        except httpx.HTTPError:
            time.sleep(0.3)
    p.kill()
    raise RuntimeError("server did not start")


@pytest.fixture(scope="module")
def server(int4_bundle):
    p, url = start(int4_bundle, "--slots", "4", "--queue", "2")
    yield url
    p.terminate()
    p.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    return OpenAI(base_url=server + "/v1", api_key="unused", max_retries=0, timeout=120)


def test_streamed_text_equals_non_streamed(client):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, temperature=0)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 24
    assert r.usage.total_tokens == r.usage.prompt_tokens + 24
    chunks = list(client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == r.choices[0].message.content and len(text) > 20
    assert chunks[-1].usage.completion_tokens == 24
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"


def test_completions_and_stop_strings(client):
    r = client.completions.create(model=MODEL, prompt="def add(a, b):\n", max_tokens=40, temperature=0,
                                  stop=["return"])
    assert r.choices[0].finish_reason == "stop" and "return" not in r.choices[0].text
    full = client.completions.create(model=MODEL, prompt="def add(a, b):\n", max_tokens=40, temperature=0)
    assert "return" in full.choices[0].text
    assert full.choices[0].text.startswith(r.choices[0].text)


def test_four_concurrent_streams_complete(client):
    prompts = ["Name a fruit.", "Name a color.", "Write a haiku about snow.", "What is 2 + 2?"]
    results = {}

    def one(p):
        s = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=16,
                                           temperature=0, stream=True)
        results[p] = ("".join(c.choices[0].delta.content or "" for c in s if c.choices))

    threads = [threading.Thread(target=one, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert set(results) == set(prompts) and all(results.values())
    for p in prompts:                                        # alone, each gives the same text
        r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": p}], max_tokens=16,
                                           temperature=0)
        assert r.choices[0].message.content == results[p]


def test_bad_requests(server, client):
    with pytest.raises(APIStatusError) as e:
        client.chat.completions.create(model="no-such-model", messages=CHAT)
    assert e.value.status_code == 404 and "no-such-model" in e.value.message
    for body in ({"model": MODEL, "messages": []}, {"model": MODEL, "messages": CHAT, "temperature": 9},
                 {"model": MODEL, "messages": CHAT, "max_tokens": 0},
                 {"model": MODEL, "messages": [{"role": "user", "content": "word " * 3000}]}):
        r = httpx.post(server + "/v1/chat/completions", json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["message"], body
    r = httpx.post(server + "/v1/chat/completions", content=b"{not json", timeout=60)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


def test_disconnected_stream_frees_its_slot(server):
    body = {"model": MODEL, "messages": CHAT, "max_tokens": 500, "temperature": 0, "stream": True}
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and "content" in line:
                break                                        # one chunk, then hang up
    deadline = time.time() + 30
    while time.time() < deadline and httpx.get(server + "/health").json()["active"] != 0:
        time.sleep(0.2)
    assert httpx.get(server + "/health").json()["active"] == 0


def test_a_full_server_answers_503(int4_bundle):
    p, url = start(int4_bundle, "--slots", "1", "--queue", "0")
    try:
        # counting goes on for the whole 900 tokens (a chat answer can end within a second, freeing the slot)
        count = ", ".join(str(i) for i in range(1, 21)) + ","
        body = {"model": MODEL, "prompt": count, "max_tokens": 900, "temperature": 0, "stream": True}
        with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
            next(r.iter_lines())
            busy = httpx.post(url + "/v1/completions", json={**body, "stream": False}, timeout=60)
        assert busy.status_code == 503 and busy.json()["error"]["code"] == "overloaded"
    finally:
        p.terminate()
        p.wait(timeout=30)


def test_api_key_and_port_in_use(int4_bundle):
    p, url = start(int4_bundle, "--api-key", "k")
    try:
        assert httpx.get(url + "/v1/models").status_code == 401
        r = httpx.post(url + "/v1/chat/completions", json={"model": MODEL, "messages": CHAT}, timeout=60)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
        ok = OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        assert [m.id for m in ok.models.list().data] == [MODEL]
        port = url.rsplit(":", 1)[1]
        r = run_cli("serve", int4_bundle, "--port", port)
        assert r.returncode == 1 and "in use" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    finally:
        p.terminate()
        p.wait(timeout=30)
