"""ONNX Runtime backend: a bundle's segment graphs and head graph, run with IO binding.

Per token nothing allocates or copies the KV cache: each layer's buffer is bound once, as both the
`past_key_i` input and the `present_key_i` output, and GroupQueryAttention writes the new position in
place. Hidden states pass from one segment to the next as OrtValues, without a numpy round trip.

All ONNX Runtime sessions share one intra-op thread pool, so segments run back to back without one
session's spinning workers stealing cores from the next.

`OrtEngine` holds the graphs (loaded once per Model); each `OrtRunner` holds one conversation's KV cache
and its own IO bindings to those graphs, so conversations share the weights and cost only their caches.

Row paths. ORT's int4/int8 MatMulNBits kernels (accuracy level 4 quantizes activations to int8) and
GroupQueryAttention take a different code path for one row than for several. The two round differently, and
int8 activation rounding turns 1e-7 differences into different tokens on about 5-10% of positions. Calls
with two or more rows agree bit for bit whatever the row count (measured: a 64-token prefill equals 16
chunks of 4, difference 0.0). With `min_rows=2` every call is padded to two rows (the padding row repeats
the last one and its KV slot is dropped), so decoding one token at a time and verifying many drafts in one
batch give identical logits: the contract lossless speculation needs.
"""
from __future__ import annotations

import threading

import numpy as np
import onnx
import onnxruntime as ort

from edgedec.errors import BundleError, ModeError
from edgedec.export.batching import batch_variant
from edgedec.export.kv import QMAX, bytes_per_token, cache_dtype, cache_variant, cache_width, load_ranges, scales
from edgedec.kvcache import KVConfig

from .draft_model import DraftModel, draft_bundle
from .ort_batch import OrtBatchRunner
from .ort_draft import OrtDrafter
from .ort_fused import CachedRunner, OrtFusedRunner, bind_cache, bind_positions, padded

_POOL_THREADS: int | None = None


def _global_pool(threads: int) -> None:
    """ORT's global thread pool can be sized once per process; later calls must agree."""
    global _POOL_THREADS
    if _POOL_THREADS is None:
        ort.set_global_thread_pool_sizes(threads, 1)
        _POOL_THREADS = threads


def _session(path, threads: int, provider: str, variant=None) -> ort.InferenceSession:
    """A session for the graph at `path`, or for `variant(graph)` (its weights still read from the bundle)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if provider == "CPUExecutionProvider":
        _global_pool(threads)
        so.use_per_session_threads = False
    else:
        so.intra_op_num_threads = threads
    if str(path).endswith(".ort"):    # a mobile bundle's graph (export/mobile.py): replay its saved optimizations
        so.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    try:
        if variant is None:
            return ort.InferenceSession(str(path), so, providers=[provider])
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", str(path.parent))
        graph = variant(onnx.load(str(path), load_external_data=False))
        return ort.InferenceSession(graph.SerializeToString(), so, providers=[provider])
    except Exception as e:
        raise BundleError(f"{path} could not be loaded by ONNX Runtime ({str(e).splitlines()[0][:200]}); "
                          "export the bundle again") from None


class OrtEngine:
    """A bundle's segment graphs and head graph, loaded once; `runner()` gives each conversation its cache."""

    name = "onnxruntime"

    def __init__(self, bundle, threads: int = 2, provider: str = "CPUExecutionProvider", kv: KVConfig = KVConfig()):
        """kv: the cache type and eviction; the segment graphs are adapted to it (export/kv.py)."""
        if provider not in ort.get_available_providers():
            raise ModeError(f"execution provider {provider} is not available in this onnxruntime; "
                            f"available: {', '.join(ort.get_available_providers())}")
        self.config = bundle.config
        self.segments = bundle.segments
        self.kv = kv
        self.kv_bytes_per_token = bytes_per_token(kv.type, self.config.n_layers, self.config.n_kv_heads,
                                                  self.config.head_dim)
        self.k_scales = None
        variant = None
        mobile = bundle.manifest.mobile
        self.prefill_chunk = mobile.prefill_chunk if mobile else None
        if mobile and kv.evicts:
            raise ModeError("a mobile bundle's ORT-format graphs cannot be rebuilt to evict; drop $kv_window, or "
                            "export without --target mobile")
        if kv.type != "fp32" or kv.evicts:
            ranges = None
            if kv.type in QMAX:
                if bundle.manifest.kv is None:
                    raise BundleError(f"{bundle.path} has no calibrated KV ranges (exported before int8/int4 "
                                      "caches existed); export it again to use $kv " + kv.type)
                ranges = load_ranges(bundle.file(bundle.manifest.kv.file))
                self.k_scales = np.stack([scales(kv.type, ranges[i][0], "k") for i in sorted(ranges)])
            if not mobile:     # (a mobile bundle's graphs have the cache built in)
                variant = lambda g: cache_variant(g, kv.type, ranges, positions=kv.evicts)  # noqa: E731
        self.sessions = [_session(bundle.file(s.file), threads, provider, variant) for s in self.segments]
        self._load = (bundle, threads, provider, variant)
        self._batch_sessions = None
        self.cache_dtype = cache_dtype(kv.type)
        self.cache_width = cache_width(kv.type, self.config.head_dim)
        self.fused = bool(mobile and mobile.fused)     # (the head is inside the one segment graph)
        self.head = None if self.fused else _session(bundle.file(bundle.manifest.head.file), threads, provider)
        drafts = bundle.manifest.drafts
        if drafts and bundle.manifest.model.fingerprint not in (None, drafts[0].fingerprint):
            raise BundleError(f"{bundle.path}: its draft was trained for {drafts[0].model}, not this bundle's model; "
                              "export the bundle again (edgedec export --draft FILE, or --no-draft)")
        self.draft = _session(bundle.file(drafts[0].file), threads, provider) if drafts else None
        self.draft_vocab = np.load(bundle.file(drafts[0].vocab_file)).astype(np.int64) if drafts else None
        self.lock = threading.Lock()
        self.adapters = {a.name: bundle.file(a.file) for a in bundle.manifest.adapters if not a.merged}
        self._draft_engine: OrtEngine | None = None
        self._adapter_values: dict[str | None, list] = {}
        self._adapter_formats: dict[str, object] = {}

    def bind_adapter(self, bindings: list, name: str | None) -> None:
        """Bind adapter `name`'s low-rank inputs (None: the base model's empty ones) into per-segment IO
        bindings, single or batched (same inputs)."""
        for io, pairs in zip(bindings, self.adapter_values(name)):
            for input_name, value in pairs:
                io.bind_ortvalue_input(input_name, value)

    def draft_engine(self) -> "OrtEngine | None":
        """The bundle's separate draft model (runtimes/draft_model.py), loaded on first use; None without one."""
        bundle, threads, provider, _ = self._load
        if self._draft_engine is None and bundle.manifest.draft_model is not None:
            self._draft_engine = OrtEngine(draft_bundle(bundle), threads, provider)
        return self._draft_engine

    def adapter_values(self, name: str | None) -> list[list[tuple[str, ort.OrtValue]]]:
        """Per segment, the low-rank inputs to bind for adapter `name` (None: the base model): the adapter
        file's tensors (ort.AdapterFormat), and empty [K, 0] / [0, N] ones for the inputs it leaves alone."""
        if name not in self._adapter_values:
            given = {}
            if name is not None:   # (the OrtValues borrow the AdapterFormat's memory: it is kept with them)
                fmt = ort.AdapterFormat.read_adapter(str(self.adapters[name]))
                given = {k: v for k, v in fmt.get_parameters().items()}
                self._adapter_formats[name] = fmt
            per_segment = []
            for sess in self.sessions:
                pairs = []
                for i in sess.get_overridable_initializers():     # (inputs with a default)
                    if i.name.endswith((".lora_a", ".lora_b")):
                        empty = [0 if isinstance(d, str) else d for d in i.shape]
                        pairs.append((i.name, given[i.name] if i.name in given else
                                      ort.OrtValue.ortvalue_from_numpy(np.zeros(empty, np.float32))))
                per_segment.append(pairs)
            self._adapter_values[name] = per_segment
        return self._adapter_values[name]

    def runner(self, n_ctx: int, min_rows: int = 1) -> "OrtRunner | OrtFusedRunner":
        return (OrtFusedRunner if self.fused else OrtRunner)(self, n_ctx, min_rows)

    def run_head(self, io, hidden) -> np.ndarray:
        """Logits [S, vocab] of the head graph on hidden [1, S, H] (numpy or OrtValue), through binding io."""
        with self.lock:
            if isinstance(hidden, np.ndarray):
                io.bind_cpu_input("hidden", np.ascontiguousarray(hidden, np.float32))
            else:
                io.bind_ortvalue_input("hidden", hidden)
            io.bind_output("logits", "cpu")
            self.head.run_with_iobinding(io)
            return io.get_outputs()[0].numpy()[0]

    def batch_runner(self, slots: int, n_ctx: int, adapter: str | None = None) -> OrtBatchRunner:
        """Rows for `slots` sequences decoded together (runtimes/ort_batch.py)."""
        if self.kv.evicts:
            raise ModeError("batched decoding does not evict; drop $kv_window (the cache types work)")
        if not 1 <= n_ctx <= self.config.context:
            raise ModeError(f"$n_ctx {n_ctx} is out of range; this model supports 1..{self.config.context}")
        return OrtBatchRunner(self, slots, n_ctx, adapter)

    def batch_sessions(self) -> list:
        """The segment graphs in their batched form (export/batching.py), loaded on first use."""
        if self._batch_sessions is None:
            bundle, threads, provider, variant = self._load
            if bundle.manifest.mobile:
                raise ModeError("batched decoding rebuilds the graphs, and a mobile bundle's ORT-format graphs "
                                "cannot be; export without --target mobile for serve and batch")
            both = lambda g: batch_variant(variant(g) if variant else g, self.config)  # noqa: E731
            self._batch_sessions = [_session(bundle.file(s.file), threads, provider, both) for s in self.segments]
        return self._batch_sessions


class OrtRunner(CachedRunner):
    """One conversation on an OrtEngine: runs any chain of whole segments, and the head, against its own
    KV cache (allocated on first use, freed by `release`)."""

    def __init__(self, engine: OrtEngine, n_ctx: int, min_rows: int = 1):
        super().__init__(engine, n_ctx, min_rows)
        self.segments = engine.segments
        self._drafter: OrtDrafter | None = None
        self._draft_model: DraftModel | None = None

    def draft_model(self) -> DraftModel | None:
        """The bundle's separate draft model for this conversation (None without one)."""
        if self._draft_model is None:
            self._draft_model = DraftModel.of(self.engine, self.n_ctx)
        return self._draft_model

    def use_adapter(self, name: str | None) -> None:
        """Run with switchable adapter `name` (None: the base model) from the next call on. ONNX Runtime's
        run_with_iobinding ignores RunOptions' active adapters, so the adapter's tensors are bound as the
        graphs' lora_a/lora_b inputs. The cache holds the old adapter's keys and values: the caller drops it."""
        self.adapter = name
        if self.cache is not None:
            self.engine.bind_adapter(self._bindings, name)

    def _bind(self) -> None:
        """Allocate the cache and bind each layer's buffer as both past and present, once."""
        self.cache = self._new_cache()
        self._bindings, self._positions = [], []   # per segment: seqlens_k and total_seq_len, updated in place
        for seg, sess in zip(self.segments, self.engine.sessions):
            io = sess.io_binding()
            self._positions.append(bind_positions(io))
            bind_cache(io, self.cache, seg.start, seg.end)
            self._bindings.append(io)
        self._head_io = self.engine.head.io_binding()
        self._head_io.bind_output("logits", "cpu")
        if self.adapter is not None:
            self.engine.bind_adapter(self._bindings, self.adapter)

    def drafter(self) -> OrtDrafter | None:
        """The bundle's trained draft for this conversation (None without one, or with an evicting cache:
        the draft's own cache does not evict); from now on it sees every hidden state the full model
        computes."""
        if self._drafter is None and self.engine.draft is not None and not self.engine.kv.evicts:
            self._drafter = OrtDrafter(self.engine.draft, self.engine.draft_vocab, self.config, self.n_ctx)
        return self._drafter

    @property
    def cuts(self) -> list[int]:
        return [s.end for s in self.segments]

    def layers(self, tokens=None, hidden=None, start: int = 0, end: int | None = None, taps=()):
        """Run layers [start, end) (segment boundaries) on new positions: (hidden [1, S, H], {cut: numpy}).

        tokens: int64 [S] when start == 0; otherwise `hidden` from the previous call (OrtValue or numpy).
        The positions written are this range's cache offset .. offset+S-1. taps: cut points inside
        (start, end) whose hidden states to return as well.
        """
        if self.cache is None:
            self._bind()
        end = self.config.n_layers if end is None else end
        if start == 0:
            x = np.ascontiguousarray(tokens, dtype=np.int64).reshape(1, -1)
            n = x.shape[1]
            x = _pad_rows(x, self.min_rows)
        else:
            n = _rows(hidden)
            hidden = _pad_rows(hidden, self.min_rows)
        out, tapped = hidden, {}
        if start == 0:
            self.cache.make_room(max(n, self.min_rows))
        with self.engine.lock:
            for seg, sess, io, (seqlens, total) in zip(self.segments, self.engine.sessions, self._bindings,
                                                       self._positions):
                if seg.end <= start or seg.start >= end:
                    continue
                if seg.start < start or seg.end > end:
                    raise ModeError(f"layers {start}..{end} do not fall on this bundle's cuts {self.cuts}; "
                                    "choose a cut point or export with more $cuts")
                past = self.cache.offset[seg.start]
                self._check_fits(past, n)
                if seg.start == 0:
                    io.bind_cpu_input("input_ids", x)
                elif isinstance(out, np.ndarray):
                    io.bind_cpu_input("hidden_in", np.ascontiguousarray(out, np.float32))
                else:
                    io.bind_ortvalue_input("hidden_in", out)
                rows = max(n, self.min_rows)
                seqlens[0], total[()] = past + rows - 1, past + rows
                if self.engine.kv.evicts:
                    io.bind_cpu_input("position_ids", self.cache.positions(past, rows))
                # a fresh output each call (S changes; callers may keep it). get_outputs() would wrap all outputs
                out = ort.OrtValue.ortvalue_from_shape_and_type([1, rows, self.config.hidden], np.float32)
                io.bind_ortvalue_output("hidden_out", out)
                sess.run_with_iobinding(io)
                self.cache.advance(seg.start, seg.end, n)
                if seg.end in taps:
                    tapped[seg.end] = out.numpy()[:, :n]
                if seg.end == self.config.n_layers and self._drafter is not None:
                    self._drafter.observe(past, out.numpy()[0, :n])
        if n < self.min_rows:
            out = _numpy(out)[:, :n]
        return out, tapped

    def head(self, hidden) -> np.ndarray:
        """Logits [S, vocab] for a hidden OrtValue [1, S, H] (or a numpy array)."""
        if self.cache is None:
            self._bind()
        n = _rows(hidden)
        hidden = _pad_rows(hidden, self.min_rows)
        return self.engine.run_head(self._head_io, hidden)[:n]

    def truncate(self, n: int) -> None:
        if self.cache is not None:
            self.cache.truncate(n)
        if self._drafter is not None:
            self._drafter.truncate(n)

    def release(self) -> None:
        self.cache = None
        if self._drafter is not None:
            self._drafter.release()
        if self._draft_model is not None:
            self._draft_model.release()
        self._bindings = self._positions = self._head_io = None

    def forward(self, tokens, all_logits: bool = False) -> np.ndarray:
        """Full model on new tokens: logits [S, V] (or [1, V] for the last position only). An evicting
        cache reads a long input in chunks that fit between evictions; a mobile bundle, in its prefill_chunk."""
        tokens = np.asarray(tokens)
        kv = self.engine.kv
        chunk = (self.n_ctx - kv.sinks - kv.window - 2 if kv.evicts
                 else self.engine.prefill_chunk or max(len(tokens), 1))
        logits = []
        for s in range(0, len(tokens), chunk):
            h, _ = self.layers(tokens[s:s + chunk])
            if all_logits:
                logits.append(self.head(h))
        if all_logits:
            return np.concatenate(logits)
        return self.head(_numpy(h)[:, -1:] if _rows(h) > 1 else h)


def _numpy(hidden) -> np.ndarray:
    return hidden if isinstance(hidden, np.ndarray) else hidden.numpy()


def _pad_rows(a, rows: int):
    """[1, S, ...] padded to at least `rows` rows by repeating the last one (unchanged when S >= rows)."""
    return a if _rows(a) >= rows else padded(_numpy(a), rows, axis=1)


def _rows(hidden) -> int:
    return hidden.shape[1] if isinstance(hidden, np.ndarray) else hidden.shape()[1]
