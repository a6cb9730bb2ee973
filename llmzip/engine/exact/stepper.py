"""KV-cached decoding: one position of many segments a step, through the network's one forward.

The step's rows run `ExactNetwork.layer` as the encoder's positions do; their products and
their attention over the cache come from the engine's backend, so a step's frequency
tables equal the encoder's for the same position bit for bit.
"""

from __future__ import annotations

import numpy as np

from llmzip.engine.exact import rules as ar

__all__ = ["Stepper"]


class Stepper:
    """KV-cached decoding of n_rows segments in lockstep: one position of every active row
    per step. Rows that have ended come last and are simply not fed."""

    def __init__(self, net, backend, n_rows: int, max_len: int):
        if max_len > ar.MAX_KEYS:
            raise ValueError(f"segment of {max_len} tokens exceeds the exact bound of {ar.MAX_KEYS}")
        self.net, self.pos = net, 0
        self.products = backend.step_products(net, n_rows, max_len)
        self.cache = backend.kv_cache(net, n_rows, max_len)

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        """Feed one token to each of the first len(input_ids) rows; return their next-token
        frequencies (rows, V) int64."""
        net = self.net
        h = net.embed_rows(np.asarray(input_ids, np.int64))
        for i, layer in enumerate(net.layers):
            h = net.layer(layer, h, lambda qkv, i=i, layer=layer: self.cache.attend(i, layer, qkv, self.pos),
                          self.products)
        self.pos += 1
        return ar.frequencies(net.logits(h, self.products))
