"""When to speculate, with what, and how far: a cost model fed by what the decoding loop measures.

Everything here is an estimate kept as a running average:
    t_plain            seconds per plain decoding step
    t_draft[E]         seconds per draft step with exit layer E (layers[0:E] + head, one row)
    t_verify[(E, n)]   seconds to run layers[E:L] + head on n rows (E = 0: the whole model, for lookup)
    alpha[E]           probability that exit E's draft equals the full model's token (per token)
    alpha[("lookup", n)]  the same for prompt-lookup proposals after a suffix match of n tokens (4 = 4 or
                       more): a 1-token match is right about 20% of the time, a 4-token one about 90%

A round drafting k tokens at exit E yields (1 - a^k) / (1 - a) tokens on average (the accepted prefix plus
the verifier's correction) and costs k * t_draft[E] + t_verify[(E, k)]. A lookup round verifying m proposed
tokens yields (1 - a^(m+1)) / (1 - a) (it also gets the bonus token) for t_verify[(0, m+1)]. The plan with
the highest expected tokens per second wins; when plain decoding beats every plan, decode plainly for a
stretch, then probe self-speculation again (stretches double while it keeps losing). Without `adaptive`,
the loop always speculates.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgedec.errors import ModeError


@dataclass(frozen=True)
class SpecConfig:
    exit_layer: int | None = None   # draft with layers[0:E]; None = choose per context among the cuts
    k_max: int = 4                  # most tokens drafted per round
    threshold: float = 0.3          # stop drafting once the draft's top probability falls below this
    lookup: bool = True             # also try prompt-lookup proposals (self-spec); lookup mode always does
    adaptive: bool = True           # fall back to plain decoding when the cost model says so
    ngram_max: int = 8              # lookup: longest suffix n-gram to match (bench/lookup_ngram.py)

    def check(self, n_layers: int, cuts: list[int]) -> None:
        """Bad settings get an error naming the valid range."""
        if self.k_max < 1:
            raise ModeError(f"--draft-len {self.k_max} is invalid: it must be at least 1 (1..16 make sense)")
        if not 0.0 <= self.threshold < 1.0:
            raise ModeError(f"--threshold {self.threshold} is invalid: use a probability in [0, 1)")
        if self.exit_layer is None:
            return
        if not 1 <= self.exit_layer <= n_layers - 1:
            raise ModeError(f"--exit-layer {self.exit_layer} is out of range: this model has {n_layers} layers, "
                            f"so the exit layer must be in 1..{n_layers - 1}")
        if self.exit_layer not in cuts:
            raise ModeError(f"--exit-layer {self.exit_layer} is not a cut of this bundle (cuts: "
                            f"{', '.join(map(str, cuts[:-1]))}); pick one of them, or export again with "
                            f"--cuts including {self.exit_layer}")


def expected_tokens(alpha: float, n: int) -> float:
    """Mean tokens from n sequential checks that each pass with probability alpha (stopping at the first
    failure, which still yields the verifier's token): 1 + a + ... + a^(n-1)."""
    alpha = min(max(alpha, 0.0), 0.999)
    return (1 - alpha ** n) / (1 - alpha)


# first-token hit rates by match length (lookup.py): the lookup estimates' starting points (others: 0.5)
LOOKUP_PRIOR = {("lookup", 1): 0.2, ("lookup", 2): 0.5, ("lookup", 3): 0.7, ("lookup", 4): 0.9}


def lookup_key(match_len: int) -> tuple[str, int]:
    """The acceptance estimate a lookup proposal after a `match_len`-token suffix match is filed under."""
    return ("lookup", min(max(match_len, 1), 4))


def ema(old: float | None, new: float, weight: float = 0.2) -> float:
    return new if old is None else old + weight * (new - old)


@dataclass
class CostModel:
    n_layers: int
    exits: list[int]                     # candidate exit layers
    k_max: int
    adaptive: bool = True
    t_plain: float | None = None
    t_draft: dict = field(default_factory=dict)
    t_verify: dict = field(default_factory=dict)
    alpha: dict = field(default_factory=dict)
    free_rows: int = 1                   # rows a call costs anyway (the backend's min_rows)
    row_cost: float = 0.2                # extra cost of one more verified row, relative to one; learnt
    stretch: int = 16                    # plain steps before probing speculation again
    fallback: int = 0                    # plain steps left in the current stretch
    warmup: int = 3                      # plain steps first, to measure t_plain

    # ---------------------------------------------------------------- measurements
    def observe_plain(self, seconds: float) -> None:
        self.t_plain = ema(self.t_plain, seconds)

    def observe_draft(self, exit_layer: int, seconds: float) -> None:
        self.t_draft[exit_layer] = ema(self.t_draft.get(exit_layer), seconds)

    def observe_verify(self, exit_layer: int, rows: int, seconds: float) -> None:
        self.t_verify[(exit_layer, rows)] = ema(self.t_verify.get((exit_layer, rows)), seconds)
        one = self._verify_one(exit_layer)
        if rows > self.free_rows and one:
            self.row_cost = ema(self.row_cost, max(seconds / one - 1, 0.0) / (rows - self.free_rows), 0.1)

    def observe_accept(self, key, checked: int, accepted: int) -> None:
        """`checked` drafts were compared with the verifier, `accepted` of them passed."""
        if checked:
            self.alpha[key] = ema(self.acceptance(key), accepted / checked, 0.1 * checked ** 0.5)

    def observe_lookup(self, match_len: int, checked: int, accepted: int) -> None:
        """The same for lookup proposals made after a `match_len`-token suffix match."""
        self.observe_accept(lookup_key(match_len), checked, accepted)

    # ---------------------------------------------------------------- estimates
    def acceptance(self, key) -> float:
        """alpha[key], or before any measurement a prior: the measured hit rate for a lookup match length,
        0.5 for an exit layer."""
        return self.alpha.get(key, LOOKUP_PRIOR.get(key, 0.5))

    def _verify_one(self, exit_layer: int) -> float | None:
        if self.t_plain is None:
            return None
        return self.t_plain * (self.n_layers - exit_layer) / self.n_layers

    def verify_time(self, exit_layer: int, rows: int) -> float:
        seen = self.t_verify.get((exit_layer, rows))
        extra = max(rows - self.free_rows, 0)
        return seen if seen is not None else self._verify_one(exit_layer) * (1 + self.row_cost * extra)

    def draft_time(self, exit_layer: int) -> float:
        if exit_layer in self.t_draft:
            return self.t_draft[exit_layer]
        if self.t_draft:                                   # scale a measured exit by depth
            e, t = next(iter(self.t_draft.items()))
            return t * (exit_layer + 2) / (e + 2)           # +2: the head costs about two layers
        return self.t_plain * (exit_layer + 2) / (self.n_layers + 2)

    def best_self(self) -> tuple[float, int, int]:
        """(expected tokens/s, exit layer, k) of the best self-speculative round."""
        best = (0.0, self.exits[0], 2)
        for e in self.exits:
            a = self.acceptance(e)
            for k in range(2, self.k_max + 1):
                rate = expected_tokens(a, k) / (k * self.draft_time(e) + self.verify_time(e, k))
                best = max(best, (rate, e, k))
        return best

    def best_lookup(self, m: int, match_len: int) -> tuple[float, int]:
        """(expected tokens/s, how many of the m proposed tokens to verify) after a `match_len`-token match."""
        a = self.acceptance(lookup_key(match_len))
        return max((expected_tokens(a, n + 1) / self.verify_time(0, n + 1), n) for n in range(1, m + 1))

    def plain_rate(self) -> float:
        return 1.0 / self.t_plain

    # ---------------------------------------------------------------- decisions
    def choose(self, n_lookup: int, match_len: int) -> tuple:
        """The next round: ("plain",), ("lookup", n) or ("self", exit_layer, k).

        n_lookup: how many tokens the lookup drafter proposes now (0: none), after a suffix match of
        `match_len` tokens. Self-speculation sits out a stretch of plain steps after the cost model last
        preferred plain decoding; lookup proposals are free to make, so they are weighed every round.
        """
        if not self.adaptive:                      # always speculate; the longer proposal wins
            if n_lookup >= 2 or (n_lookup and not self.exits):
                return ("lookup", n_lookup)
            return ("self", self.exits[0], self.k_max) if self.exits else ("plain",)
        if self.t_plain is None or self.warmup > 0:
            self.warmup -= 1
            return ("plain",)
        options = [(self.plain_rate(), ("plain",))]
        if n_lookup:
            rate, n = self.best_lookup(n_lookup, match_len)
            options.append((rate, ("lookup", n)))
        if self.exits and self.fallback <= 0:
            rate, e, k = self.best_self()
            options.append((rate, ("self", e, k)))
        elif self.fallback > 0:
            self.fallback -= 1
        rate, plan = max(options, key=lambda o: o[0])
        if plan[0] == "plain" and self.fallback <= 0:
            self.fallback = self.stretch           # plain wins: sit out, and wait longer next time
            self.stretch = min(self.stretch * 2, 256)
        elif plan[0] == "self":
            self.stretch = 16
        return plan


MARGIN = 0.1   # PathLedger: how much a call's gain must beat the exact path's tax by


@dataclass
class PathLedger:
    """Per call, whether a speculative mode should speculate at all, from what earlier calls measured.

    Speculating runs every step on the many-row kernel path, so that the output is token for token plain
    `--exact`; that path's plain step costs t_exact, more than the one-row step t_one. Speculation pays only
    when its gain over plain steps on its own path beats that tax:

        gain = tokens per second of a speculative call * t_exact measured in the same call
        speculate  iff  gain > t_exact / t_one + MARGIN

    The gain comes from the last call in that mode. A speculative call measures it (within one call, so it
    is immune to the machine's drift between calls). A call that decoded plainly replays lookup on its own
    output (`replay_lookup`), which says what speculating would have gained without paying for it, so a
    losing path is never tried just to find out: a prose call after code calls costs at most that one call.
    The tax is an average over calls of both kinds. Before anything is measured a call speculates; the call
    after the first speculative one decodes plainly to measure t_one. MARGIN is about what one call's gain
    is off from the next one's on the same kind of text (bench/replay_gain.py: a median of 0.05-0.08), so a
    call speculates only when that is clearly worth it: where the two paths are within noise (prose), it
    keeps to plain decoding, which is the floor the speculative modes must not fall below.
    """
    gain: dict = field(default_factory=dict)       # speculative mode -> gain over its own plain steps
    t_one: float | None = None                     # seconds per one-row plain step
    t_exact: float | None = None                   # seconds per plain step on the many-row path
    row_cost: float = 0.2                          # extra cost of a verified row (CostModel.row_cost), learnt

    def choose(self, mode: str) -> str:
        """"speculate" or "plain" for the next call in `mode`."""
        if mode not in self.gain or self.t_exact is None:
            return "speculate"
        if self.t_one is None:
            return "plain"
        return "speculate" if self.gain[mode] > self.t_exact / self.t_one + MARGIN else "plain"

    def observe_speculation(self, mode: str, tok_s: float, t_exact_step: float | None,
                            row_cost: float | None = None) -> None:
        """A speculative call's decode rate, the mean time of its plain steps (many-row path) and its cost
        model's learnt cost per extra verified row."""
        if t_exact_step:
            self.gain[mode] = tok_s * t_exact_step
            self.t_exact = ema(self.t_exact, t_exact_step, 0.3)
        if row_cost is not None:
            self.row_cost = row_cost

    def observe_plain(self, mode: str | None, tok_s: float, replayed_gain: float | None = None) -> None:
        """A call decoded plainly on one-row kernels; in a speculative mode, with what lookup would have
        gained on its output (`replay_lookup`)."""
        self.t_one = ema(self.t_one, 1.0 / tok_s, 0.3)
        if mode is not None and replayed_gain is not None:
            self.gain[mode] = replayed_gain
