"""Learning the file while coding it: token counts mixed into the model's tables, exactly.

The model knows language; it does not know this file beyond its context window. The rows of a
group step in lockstep (`lockstep`), so at step t every row's tokens before t are known to
encoder and decoder alike: counts of what followed each recent context (the last 1, 2, 3,
4 or 6 tokens) in any row of the group are a file-specific predictor that parallel decoding
does not lose. A token t gets a bias, in the log domain (geometric mixing, a product of
experts):

    p'(t) ~ p(t) * exp(sum_k w[s, k] * ln(2 c_k(t) + 1))

where c_k(t) counts t after the row's last k tokens, plus (`counts`, format version 3) a
constant w[s, *] for having followed the longest context at all. s picks a weight set, so
that the mixer learns, per set, how far to trust the counts over the model: by the model's
confidence (its top probability in quarters) and by how the longest context's followers
spread: seen once, always the same token, a few tokens seen often, or many. A random field
(a request id) has spread followers and learns to ignore them; a key's value has one
follower and learns to trust it (bench/adaptation.py's service log: 7.6% smaller than
the model alone with confidence alone, 10.3% with spread too). The weights follow the
gradient of the code length, once per step. `counts-v1` archives (format version 2) used
confidence alone, no constant and a faster rate; their rules are kept (`RULES`) so they
still decode.

Only tokens that followed the longest context seen before get a bias (the rest keep the model's
frequency), so a step costs a few dict lookups and a sparse update, not a pass over the
vocabulary. Every number is an integer: counts, logs and exps from decimal-built tables
(`tables`), weights in 1/65,536, biases in 1/256 nat, floor divisions; so any machine, thread
count or batch gives the same tables. The mode is recorded in the archive (`Adaptation`).

Scope is the group: groups stay independent, so processes and decoding waves split work as
before. A segment's own counts add little, as the model already sees 4,096 tokens of its
own segment (an offline replay of alice29's tables gained about a third of what the group's
counts gain); what helps is what the other rows of the group have read.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from llmzip.container import Adaptation
from llmzip.engine.exact.tables import exp_multipliers, log_table, persisted
from llmzip.engine.tables import as_tables

__all__ = ["Adapter", "adapter_for"]


ORDERS = (1, 2, 3, 4, 6)  # context lengths, in tokens
COUNT_CAP = 255  # counts saturate here
STEPS = 256  # biases and logs in 1/256 nat
BIAS_LIMIT = 8 * STEPS  # |bias| <= 8 nats: a factor of 2,981 either way
WEIGHT_BITS = 16  # weights in 1/65,536
CONFIDENCES = 4  # the model's top probability in quarters
SPREADS = 4  # the longest context's followers: seen once, one token, few, many
# Learning rate per nat of gradient, in 1/1024 of a weight unit per step: a mode's
# rate_start (25.6: eta = 0.1) times 64 / (64 + n) after a weight set's n updates, down to 0.5
# (eta = 1/512): fast enough for a small file, steady for a long one (tried on alice29,
# asyoulik and a service log). The rate times the gradient can pass 2^63: that product
# is taken in Python integers.
RATE_HALF, RATE_FLOOR, RATE_UNIT = 64, 512, 1024
SAMPLE_BITS = 16  # frequencies rounded to 16 bits for the gradient's expectation
MAX_TOTAL = 1 << 52  # the coder's rows must sum below 2^53


@functools.cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """ln(2c + 1) in steps (256,), and exp(k / 256) in 1/65,536 for |k| <= BIAS_LIMIT
    (4097,): built on first use, so a run that does not adapt does not pay for them."""
    return (persisted(log_table, STEPS, COUNT_CAP),
            persisted(exp_multipliers, STEPS, WEIGHT_BITS, BIAS_LIMIT))


@dataclass(frozen=True)
class Rules:
    """What differs between the adaptation modes an archive may name."""

    spread: bool  # weight sets by the longest context's spread too, not confidence alone
    constant: bool  # a constant feature: having followed the longest context
    rate_start: int  # the learning rate's start, in 1/RATE_UNIT

    @property
    def selectors(self) -> int:
        return CONFIDENCES * (SPREADS if self.spread else 1)


RULES = {Adaptation.COUNTS_V1: Rules(spread=False, constant=False, rate_start=52_429),
         Adaptation.COUNTS: Rules(spread=True, constant=True, rate_start=26_214)}


def adapter_for(adaptation: Adaptation, n_rows: int) -> "Adapter | None":
    """The adapter of one group of n_rows segments, or None for the model's tables as they are."""
    return Adapter(n_rows, RULES[adaptation]) if adaptation in RULES else None


class _Row(NamedTuple):
    """What `learn` needs of one row that `adjust` changed (tokens None: nothing biased)."""

    row: int
    selector: int
    tokens: np.ndarray | None  # the biased tokens
    logs: np.ndarray | None  # (tokens, features)
    before: np.ndarray | None  # their model frequencies
    after: np.ndarray | None  # and adapted ones
    pure_total: int  # the row's total before and after
    total: int


class Adapter:
    """The counts and weights of one group; `adjust` a step's tables, then `learn` its tokens.

    adjust(freqs, rows) changes the tables in place (rows: the group's row of each table
    row, in the coder's order) and remembers what learn(tokens) needs; encoder and decoder
    call them in the same order with the same tables, so they stay in step."""

    def __init__(self, n_rows: int, rules: Rules = RULES[Adaptation.COUNTS],
                 orders: tuple[int, ...] = ORDERS, schedule: bool = True):
        """orders and schedule other than the defaults are for ablations (bench/adaptation.py);
        archives record only the rules of their mode."""
        self.rules, self.orders, self.schedule = rules, orders, schedule
        self.counts = [{} for _ in orders]  # per order: context tuple -> {token: count}
        self.history: list[list[int]] = [[] for _ in range(n_rows)]
        self.n_features = len(orders) + rules.constant
        self.weights = np.zeros((rules.selectors, self.n_features), np.int64)
        self.updates = np.zeros(rules.selectors, np.int64)  # per weight set, for the rate
        self.saved_bits = 0.0  # what adapting saved against the model alone (encoder's ledger)
        self._pending: list[_Row] = []

    def _features(self, row: int) -> tuple[np.ndarray, np.ndarray, int] | None:
        """Tokens that followed the longest known context of this row, (tokens, features)
        log-counts of each under every order's context (then the constant), and the
        followers' spread."""
        h = self.history[row]
        seen = [self.counts[o].get(tuple(h[-k:])) if len(h) >= k else None
                for o, k in enumerate(self.orders)]
        longest = next((s for s in reversed(seen) if s), None)
        if longest is None:
            return None
        log = _tables()[0]
        tokens = np.fromiter(longest, np.int64, len(longest))
        logs = np.zeros((len(tokens), self.n_features), np.int64)
        for o, followers in enumerate(seen):
            if followers:
                logs[:, o] = log[[min(followers.get(t, 0), COUNT_CAP) for t in longest]]
        if self.rules.constant:
            logs[:, -1] = STEPS
        return tokens, logs, _spread(longest) if self.rules.spread else 0

    def adjust(self, freqs, rows: list[int]):
        """freqs (len(rows), V): `Tables` or an int64 array (or a list of rows), changed in
        place and returned. Every row's total and largest entry are read at once, then the
        entries of all rows' biased tokens, which are written back at once: a few transfers
        a step wherever the tables are (`engine.tables`), whatever the row count."""
        tables = as_tables(freqs)
        self._pending = []
        found = [self._features(row) for row in rows]
        biased = [j for j, f in enumerate(found) if f is not None]
        totals = tables.totals()
        if biased:
            maxima = tables.maxima()
            at = np.concatenate([np.full(len(found[j][0]), j) for j in biased])
            biased_tokens = np.concatenate([found[j][0] for j in biased])
            before_all = tables.gather(at, biased_tokens)
        afters, first = [], 0
        for j, row in enumerate(rows):
            total = pure_total = int(totals[j])
            if found[j] is None:
                self._pending.append(_Row(row, 0, None, None, None, None, total, total))
                continue
            tokens, logs, spread = found[j]
            before = before_all[first:first + len(tokens)]
            first += len(tokens)
            confidence = min(int(maxima[j]) * CONFIDENCES // total, CONFIDENCES - 1)
            selector = confidence * (SPREADS if self.rules.spread else 1) + spread
            bias = np.clip((logs @ self.weights[selector]) >> WEIGHT_BITS, -BIAS_LIMIT, BIAS_LIMIT)
            after = np.maximum((before * _tables()[1][bias + BIAS_LIMIT]) >> WEIGHT_BITS, 1)
            afters.append(after)
            total += int(after.sum() - before.sum())
            self._pending.append(
                _Row(row, selector, tokens, logs, before, after, pure_total, total))
        if biased:
            tables.scatter(at, biased_tokens, np.concatenate(afters))
        for j, r in enumerate(self._pending):  # never with today's tables; exact if it happens
            if r.tokens is not None and r.total >= MAX_TOTAL:
                shift = r.total.bit_length() - MAX_TOTAL.bit_length() + 1
                tables.rescale(j, shift)
                after = tables.gather(np.full(len(r.tokens), j), r.tokens)
                self._pending[j] = r._replace(after=after, total=int(tables.totals()[j]))
        return freqs

    def learn(self, tokens) -> None:
        """The tokens the rows of the last `adjust` read: a gradient step on the weights
        (the same for every row of the step), then the counts and histories."""
        step = np.zeros_like(self.weights)
        rates = [self._rate(s) for s in range(self.rules.selectors)]
        for r, token in zip(self._pending, tokens):
            token = int(token)
            if r.tokens is not None:
                hit = np.flatnonzero(r.tokens == token)
                index = int(hit[0]) if len(hit) else None  # the token among the biased ones
                self.saved_bits += _saved_bits(r, index)
                shift = max(int(r.after.max()).bit_length() - SAMPLE_BITS, 0)
                sampled, z = r.after >> shift, max(r.total >> shift, 1)
                actual = r.logs[index] if index is not None else 0 * r.logs[0]
                gradient = actual * z - sampled @ r.logs  # (features,) in steps, times z: < 2^63
                rate = rates[r.selector]
                step[r.selector] += [int(g) * rate // (RATE_UNIT * z) for g in gradient]
                self.updates[r.selector] += 1  # the rate moves on after the whole step
            h = self.history[r.row]
            for o, k in enumerate(self.orders):
                if len(h) >= k:
                    followers = self.counts[o].setdefault(tuple(h[-k:]), {})
                    followers[token] = followers.get(token, 0) + 1
            h.append(token)
        self.weights += step
        self._pending = []

    def _rate(self, selector: int) -> int:
        """This step's learning rate of a weight set, from its updates before the step."""
        if not self.schedule:
            return RATE_FLOOR
        return max(RATE_FLOOR, self.rules.rate_start * RATE_HALF //
                   (RATE_HALF + int(self.updates[selector])))


def _spread(followers: dict) -> int:
    """How a context's followers spread: 0 seen once, 1 always the same token, 2 a few
    tokens seen often (at least 4 times each on average), 3 many."""
    distinct, seen = len(followers), sum(followers.values())
    return 0 if seen == 1 else 1 if distinct == 1 else 2 if 4 * distinct <= seen else 3


def _saved_bits(r: _Row, index: int | None) -> float:
    """log2 of the read token's adapted probability over the model's (index: its place
    among the biased tokens, None if it is not one): a statistic for the encoder's choice
    (`groups.encode`), never part of a table."""
    ratio = int(r.after[index]) / int(r.before[index]) if index is not None else 1.0
    return math.log2(ratio * r.pure_total / r.total)
