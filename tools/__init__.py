"""edgedec's tools: benchmarks, the self-spec tuner and the benchmark prompt sets. They use the library
like any other program; the library never imports them.

    edgedec-bench [BUNDLE] [--runs 5]           edgedec vs llama.cpp, same GGUF, same threads (bench.py)
    edgedec-bench [BUNDLE] --modes [--runs 3]   decoding modes on code and prose prompts (modes.py)
    edgedec-tune [BUNDLE]                       sweep self-spec settings, store the best (tune.py)
    python -m edgedec_tools.prompts             fetch the prompt sets and test text once (`make data`)
"""
