"""When to speculate, with what, and how far: a cost model fed by what the decoding loop measures.

Everything here is an estimate kept as a running average:
    t_plain            seconds per plain decoding step
    t_draft[E]         seconds per draft step with exit layer E (layers[0:E] + head, one row)
    t_verify[(E, n)]   seconds to run layers[E:L] + head on n rows (E = 0: the whole model, for lookup)
    alpha[E]           probability that exit E's draft equals the full model's token (per token)
    t_draft["draft"], alpha["draft"]   the same for the bundle's trained draft (its rounds verify with the
                       whole model, t_verify[(0, n)], like lookup)
    alpha[("lookup", n)]  the same for prompt-lookup proposals after a suffix match of n tokens (4 = 4 or
                       more): a 1-token match is right about 20% of the time, a 4-token one about 90%

A round drafting k tokens at exit E yields (1 - a^k) / (1 - a) tokens on average (the accepted prefix plus
the verifier's correction) and costs k * t_draft[E] + t_verify[(E, k)]. A lookup round verifying m proposed
tokens yields (1 - a^(m+1)) / (1 - a) (it also gets the bonus token) for t_verify[(0, m+1)]. The plan with
the highest expected tokens per second wins (a trained-draft round of k tokens is weighed as a lookup
round is: it also gets the bonus token); when plain decoding beats every plan, decode plainly for a
stretch, then probe self-speculation again (stretches double while it keeps losing). Without `adaptive`,
the loop always speculates.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
    draft: bool = False                  # a trained draft is available
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
        exits = [(e, t) for e, t in self.t_draft.items() if e != "draft"]
        if exits:                                          # scale a measured exit by depth
            e, t = exits[0]
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

    def best_draft(self) -> tuple[float, int]:
        """(expected tokens/s, k) of the best trained-draft round; before it is measured a draft step is
        guessed at a tenth of a plain step."""
        a, t = self.acceptance("draft"), self.t_draft.get("draft", 0.1 * self.t_plain)
        return max((expected_tokens(a, k + 1) / (k * t + self.verify_time(0, k + 1)), k)
                   for k in range(1, self.k_max + 1))

    def best_lookup(self, m: int, match_len: int) -> tuple[float, int]:
        """(expected tokens/s, how many of the m proposed tokens to verify) after a `match_len`-token match."""
        a = self.acceptance(lookup_key(match_len))
        return max((expected_tokens(a, n + 1) / self.verify_time(0, n + 1), n) for n in range(1, m + 1))

    def plain_rate(self) -> float:
        return 1.0 / self.t_plain

    # ---------------------------------------------------------------- decisions
    def choose(self, n_lookup: int, match_len: int) -> tuple:
        """The next round: ("plain",), ("lookup", n), ("draft", k) or ("self", exit_layer, k).

        n_lookup: how many tokens the lookup drafter proposes now (0: none), after a suffix match of
        `match_len` tokens. Self-speculation sits out a stretch of plain steps after the cost model last
        preferred plain decoding; lookup proposals are free to make, so they are weighed every round.
        """
        if not self.adaptive:                      # always speculate; the longer proposal wins
            if n_lookup >= 2 or (n_lookup and not self.exits and not self.draft):
                return ("lookup", n_lookup)
            if self.draft:
                return ("draft", self.k_max)
            return ("self", self.exits[0], self.k_max) if self.exits else ("plain",)
        if self.t_plain is None or self.warmup > 0:
            self.warmup -= 1
            return ("plain",)
        options = [(self.plain_rate(), ("plain",))]
        if n_lookup:
            rate, n = self.best_lookup(n_lookup, match_len)
            options.append((rate, ("lookup", n)))
        if (self.exits or self.draft) and self.fallback <= 0:
            if self.exits:
                rate, e, k = self.best_self()
                options.append((rate, ("self", e, k)))
            if self.draft:
                rate, k = self.best_draft()
                options.append((rate, ("draft", k)))
        elif self.fallback > 0:
            self.fallback -= 1
        rate, plan = max(options, key=lambda o: o[0])
        if plan[0] == "plain" and self.fallback <= 0:
            self.fallback = self.stretch           # plain wins: sit out, and wait longer next time
            self.stretch = min(self.stretch * 2, 256)
        elif plan[0] in ("self", "draft"):
            self.stretch = 16
        return plan
