"""Plain and speculative decoding speed of two versions of edgedec, side by side in one bench run.

    python bench/before_after.py BEFORE_REF AFTER_REF [--bundle DIR] [--prompts 8] [-n 96] [--runs 3] [-t 2]
                                 [--out bench/results]

A ref is a git ref of this repository (`842af33`, `HEAD`) or WORKTREE (the working tree's files). Each version
is extracted to a temp dir, laid out as setuptools installs it (export/, runtimes/, models/ inside edgedec/;
tools/ as edgedec_tools), and runs in its own worker process (PYTHONPATH = that dir, which wins over the
editable install; checked) holding one model. Prompts: HumanEval (code) and writingbench (prose) as in
tools/prompts.py, chat-formatted by the after version; both get the same ids. Each run, both versions decode
every prompt in each mode (plain, lookup, self-spec; greedy, each version's defaults, cold cache), which goes
first alternating (AB BA ...). Per version, set, mode and run: tok/s = sum(new - 1) / sum((new - 1) / decode
tok/s). Reported: medians over runs, the median of per-run after/before ratios (the steadier number: each run
pairs the two seconds apart) and how many greedy outputs the versions share. Writes <out>/before_after-<time>
.json and .png, and prints the table as markdown.
"""
import argparse, json, os, shutil, statistics, subprocess, sys, tempfile, time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv" / "bin"
BUNDLE = Path.home() / ".cache" / "edgedec" / "SmolLM2-135M-Instruct-int4"
MODES = ("plain", "lookup", "self-spec")
LAYOUT = {"edgedec": "edgedec", "export": "edgedec/export", "runtimes": "edgedec/runtimes",
          "models": "edgedec/models", "tools": "edgedec_tools"}      # repo folder -> place in the package root


def prompt_texts(n: int) -> dict[str, list[str]]:
    """The repository's own prompt sets (tools/prompts.py, fetched by `make data`)."""
    from edgedec_tools.prompts import code_prompts, writing_prompts
    return {"code": code_prompts(n), "prose": writing_prompts(n)}


def git(*args: str, text: bool = True):
    out = subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=text).stdout
    return out.strip() if text else out


def materialize(ref: str, tmp: Path) -> tuple[Path, str]:
    """An importable package root for `ref`, and the commit it is (`<HEAD>+worktree` for WORKTREE)."""
    src, root = tmp / "src", tmp / "pkgroot"
    src.mkdir(parents=True)
    if ref == "WORKTREE":
        folders, commit = [f for f in LAYOUT if (REPO / f).is_dir()], git("rev-parse", "HEAD") + "+worktree"
        for f in folders:
            shutil.copytree(REPO / f, src / f, ignore=shutil.ignore_patterns("__pycache__"))
    else:
        commit = git("rev-parse", "--verify", ref + "^{commit}")
        folders = git("ls-tree", "--name-only", commit, "--", *LAYOUT).split()
        subprocess.run(["tar", "-x", "-C", str(src)], input=git("archive", commit, *folders, text=False), check=True)
    for f in sorted(folders, key=lambda f: f != "edgedec"):             # edgedec/ first: the others go inside it
        shutil.copytree(src / f, root / LAYOUT[f])
    return root, commit


class Worker:
    """One version in its own process, holding one model; one JSON line per request and per reply."""

    def __init__(self, name: str, root: Path, bundle: Path, threads: int):
        self.name, self.proc = name, subprocess.Popen(
            [VENV / "python", Path(__file__).resolve(), "--worker", "--bundle", bundle, "-t", str(threads)], cwd=root,
            env=dict(os.environ, PYTHONPATH=str(root)), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.file = self.ask({})["file"]
        assert Path(self.file).resolve().is_relative_to(root.resolve()), f"{name} imported {self.file}, not {root}"

    def ask(self, request: dict) -> dict:
        print(json.dumps(request), file=self.proc.stdin, flush=True)
        line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the {self.name} worker died (exit {self.proc.wait()}); its stderr is above")
        return json.loads(line)


def serve(bundle: str, threads: int) -> None:
    """The worker: load once, then answer {} (which edgedec), {"encode": text} and {"mode", "ids", "n"}."""
    reply, sys.stdout = sys.stdout, sys.stderr                       # stdout carries replies only
    import edgedec
    model = edgedec.load(bundle, threads=threads, n_ctx=2048)
    for line in sys.stdin:
        q = json.loads(line)
        if "mode" in q:
            model.reset()
            r = model.generate(q["ids"], max_tokens=q["n"], mode=q["mode"])
            out = {"tokens": r.n_new_tokens, "decode_tok_s": r.decode_tok_s, "ids": r.tokens}
        else:
            out = {"ids": model.encode_prompt(q["encode"])} if "encode" in q else {"file": edgedec.__file__}
        print(json.dumps(out), file=reply, flush=True)


def bench(workers: list[Worker], prompts: dict[str, list[list[int]]], runs: int, n: int):
    """speed[version][set][mode]: tok/s, one per run; same[set][mode]: per prompt, the runs whose outputs match."""
    speed = {w.name: {s: {m: [] for m in MODES} for s in prompts} for w in workers}
    same, turn = {s: {m: [0] * len(ids) for m in MODES} for s, ids in prompts.items()}, 0
    for run in range(runs):
        for s, prompt_ids in prompts.items():
            tokens = {(w.name, m): [0, 0.0] for w in workers for m in MODES}     # new tokens - 1, seconds
            for j, ids in enumerate(prompt_ids):
                for m in MODES:
                    out, turn = {w.name: None for w in workers}, turn + 1
                    for w in workers[:: 1 if turn % 2 else -1]:
                        r = out[w.name] = w.ask({"mode": m, "ids": ids, "n": n})
                        if r["tokens"] > 1:
                            tokens[w.name, m][0] += r["tokens"] - 1
                            tokens[w.name, m][1] += (r["tokens"] - 1) / r["decode_tok_s"]
                    same[s][m][j] += out["before"]["ids"] == out["after"]["ids"]
            for (v, m), (k, sec) in tokens.items():
                speed[v][s][m].append(k / sec if sec else 0.0)
            print(f"run {run + 1}/{runs} {s}: " + ", ".join(f"{m} {speed['before'][s][m][-1]:.1f} -> "
                  f"{speed['after'][s][m][-1]:.1f}" for m in MODES), file=sys.stderr)
    return speed, same


def table(speed, same) -> list[dict]:
    rows = []
    for s in same:
        for m in MODES:
            b, a = speed["before"][s][m], speed["after"][s][m]
            rows.append({"set": s, "mode": m, "before_tok_s": statistics.median(b), "after_tok_s": statistics.median(a),
                         "median_run_ratio": statistics.median([y / x if x else float("nan") for x, y in zip(b, a)]),
                         "identical_outputs": sum(same[s][m]), "outputs": len(same[s][m]) * len(b)})
    return rows


def plot(rows: list[dict], refs: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for v, dx in (("before", -0.2), ("after", 0.2)):
        ax.bar([i + dx for i in range(len(rows))], [r[f"{v}_tok_s"] for r in rows], 0.4, label=f"{v}: {refs[v]}")
    ax.set_xticks(range(len(rows)), [f"{r['set']} {r['mode']}\n{r['median_run_ratio']:.2f}x" for r in rows])
    ax.set(ylabel="decode tok/s, median over runs", title="after/before: median of per-run ratios under each pair")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("refs", nargs="*", metavar="REF", help="BEFORE_REF AFTER_REF: git refs, or WORKTREE")
    p.add_argument("--bundle")
    p.add_argument("--prompts", type=int, default=8, help="prompts per set (code, prose)")
    p.add_argument("-n", "--max-tokens", type=int, default=96)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("-t", "--threads", type=int, default=2)
    p.add_argument("--out", default=str(REPO / "bench" / "results"))
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        return serve(a.bundle, a.threads)
    if len(a.refs) != 2:
        p.error("give BEFORE_REF and AFTER_REF")
    bundle, texts, refs = Path(a.bundle or BUNDLE), prompt_texts(a.prompts), dict(zip(("before", "after"), a.refs))
    with tempfile.TemporaryDirectory(prefix="before_after-") as tmp:
        trees = {v: materialize(ref, Path(tmp) / v) for v, ref in refs.items()}
        if not (bundle / "edgedec.json").exists():     # the before version writes it: the after one should read it
            subprocess.run([VENV / "python", "-m", "edgedec.cli", "export", "-o", bundle], check=True, cwd=tmp,
                           stdout=sys.stderr, env=dict(os.environ, PYTHONPATH=str(trees["before"][0])))
        workers = [Worker(v, root, bundle, a.threads) for v, (root, _) in trees.items()]
        prompts = {s: [workers[1].ask({"encode": t})["ids"] for t in ts] for s, ts in texts.items()}
        speed, same = bench(workers, prompts, a.runs, a.max_tokens)
        for w in workers:
            w.proc.stdin.close()
            w.proc.wait()
    rows, commits = table(speed, same), {v: c for v, (_, c) in trees.items()}
    result = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "refs": refs, "commits": commits, "bundle": str(bundle),
              "threads": a.threads, "runs": a.runs, "new_tokens": a.max_tokens,
              "n_prompts": {s: len(v) for s, v in prompts.items()}, "table": rows, "tok_s_per_run": speed,
              "identical_runs_per_prompt": same}
    stem = Path(a.out) / f"before_after-{time.strftime('%Y%m%d-%H%M%S')}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(rows, refs, stem.with_suffix(".png"))
    print(f"before {refs['before']} ({commits['before'][:12]}), after {refs['after']} ({commits['after'][:12]}); "
          f"{a.threads} threads, {a.max_tokens} new tokens, median of {a.runs} runs\n")
    print("| set | mode | before tok/s | after tok/s | after/before (median of per-run ratios) | identical outputs |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['set']} | {r['mode']} | {r['before_tok_s']:.1f} | {r['after_tok_s']:.1f} | "
              f"{r['median_run_ratio']:.3f} | {r['identical_outputs']}/{r['outputs']} |")
    print(f"\nwrote {stem}.json and {stem}.png")


if __name__ == "__main__":
    main()
