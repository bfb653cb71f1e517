"""How well do the model's own early layers draft, untrained and with a trained linear exit adapter, and how
well would they have to draft to pay?

    edgedec export -o /tmp/c3 --cuts 3,6,9,12,15,18,21,24,27
    python bench/exit_agreement.py /tmp/c3 [--prompts 8] [-n 128] [--adapter]

For every cut E of the bundle:
  untrained  top-1 agreement of head(layers[0:E]) with the full model, teacher-forced over greedy
             continuations of the first `--prompts` HumanEval and writingbench prompts;
  adapter    (--adapter) the same through a linear map A_E fitted by ridge regression from the RMS-normalised
             hidden state after layer E to the one after the last layer (a "tuned lens"), on the greedy
             continuations of held-out prompts (HumanEval 40-99, writingbench 40+); head(h_E A_E);
  break-even the per-token acceptance at which self-drafting at E beats plain decoding on the exact path,
             from this device's measured step times and the cost model's own formula (cost.CostModel);
             "never" when even drafts that are always right would not.
"""
import argparse
import time

import numpy as np

import edgedec
from edgedec_tools.prompts import code_prompts, writing_prompts
from edgedec.strategies.cost import CostModel


def hidden_states(model, prompts: list[str], n_new: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """Per cut, the hidden states [N, H] at the positions that predicted each greedy new token, and the
    index of the prompt each row came from."""
    be, cuts = model.backend, model.backend.cuts
    out = {c: [] for c in cuts}
    for p in prompts:
        model.reset()
        new = model.generate(p, max_tokens=n_new).tokens
        ids = model.encode_prompt(p) + new
        be.truncate(0)
        final, taps = be.layers(np.array(ids), taps=cuts[:-1])
        taps[cuts[-1]] = final.numpy()
        for c in cuts:
            out[c].append(taps[c][0, len(ids) - len(new) - 1:-1])
    return {c: np.concatenate(v) for c, v in out.items()}, np.concatenate(
        [np.full(len(v), i) for i, v in enumerate(out[cuts[-1]])])


def rms_normalise(h: np.ndarray) -> np.ndarray:
    return h / np.sqrt((h * h).mean(axis=1, keepdims=True) + 1e-6)


def adapter_input(h: np.ndarray) -> np.ndarray:
    """[N, H+1]: the normalised hidden state and a 1 for the bias."""
    return np.hstack([rms_normalise(h), np.ones((len(h), 1), np.float32)])


def fit_adapter(h_exit: np.ndarray, h_final: np.ndarray, ridge: float = 1.0) -> np.ndarray:
    """[H+1, H] least-squares map (with a bias row) from normalised h_E to normalised h_L."""
    x = adapter_input(h_exit).astype(np.float64)
    a = x.T @ x + ridge * np.eye(x.shape[1])
    return np.linalg.solve(a, x.T @ rms_normalise(h_final).astype(np.float64)).astype(np.float32)


def apply_adapter(w: np.ndarray, h: np.ndarray) -> np.ndarray:
    return adapter_input(h) @ w


def top1(model, h: np.ndarray) -> np.ndarray:
    return np.concatenate([model.backend.head(h[None, i:i + 256]).argmax(1) for i in range(0, len(h), 256)])


def break_even(model, exits: list[int], reps: int = 30) -> dict[int, float]:
    """Smallest acceptance (0.01 steps) at which the cost model prefers self-drafting at E over plain steps,
    with every time measured here on the exact path."""
    be, n_layers = model.backend, model.bundle.config.n_layers
    ids = model.encode_prompt(code_prompts(1)[0])
    costs = CostModel(n_layers, exits, k_max=6, free_rows=be.min_rows)

    def timed(fn) -> float:
        t = []
        for _ in range(reps):
            be.truncate(len(ids))
            t0 = time.perf_counter()
            fn()
            t.append(time.perf_counter() - t0)
        return float(np.median(t))

    be.truncate(0)
    be.forward(ids)
    costs.t_plain = timed(lambda: be.forward([5]))
    for e in exits:
        costs.t_draft[e] = timed(lambda: be.head(be.layers([5], end=e)[0]))
        for k in range(1, costs.k_max + 1):
            h = np.zeros((1, k, model.bundle.config.hidden), np.float32)
            costs.t_verify[(e, k)] = timed(lambda: be.head(be.layers(hidden=h, start=e)[0]))
    out = {}
    for e in exits:
        costs.exits, out[e] = [e], float("nan")
        for percent in range(101):
            costs.alpha[e] = percent / 100
            if costs.best_self()[0] > costs.plain_rate():
                out[e] = percent / 100
                break
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("-n", "--max-tokens", type=int, default=128)
    ap.add_argument("--adapter", action="store_true", help="also fit and score a linear exit adapter per cut")
    a = ap.parse_args()
    model = edgedec.load(a.bundle, n_ctx=2048, exact=True)
    cuts = model.backend.cuts
    test, which = hidden_states(model, code_prompts(a.prompts) + writing_prompts(a.prompts), a.max_tokens)
    is_code = which < a.prompts
    want = top1(model, test[cuts[-1]])
    if a.adapter:
        train, _ = hidden_states(model, code_prompts(100)[40:] + writing_prompts(400)[40:], a.max_tokens)
        print(f"adapters fitted on {len(train[cuts[-1]])} positions, scored on {len(want)}")
    needed = break_even(model, cuts[:-1])
    print("exit  untrained code/prose" + ("   adapter code/prose" if a.adapter else "") + "   break-even acceptance")
    for c in cuts[:-1]:
        hit = top1(model, test[c]) == want
        row = f"{c:4d}  {hit[is_code].mean():8.1%} / {hit[~is_code].mean():6.1%}"
        if a.adapter:
            hit = top1(model, apply_adapter(fit_adapter(train[c], train[cuts[-1]]), test[c])) == want
            row += f"   {hit[is_code].mean():8.1%} / {hit[~is_code].mean():6.1%}"
        need = "never" if np.isnan(needed[c]) else f"{needed[c]:.2f}"
        print(f"{row}   {need}", flush=True)


if __name__ == "__main__":
    main()
