"""The float engine: the model's own float32 forward through transformers (not portable).

For architectures exact arithmetic does not cover. Its tables depend on the torch build,
the CPU and the thread count, which the archive's header records; the decoder must feed
exactly the rows the encoder fed.
"""

from __future__ import annotations

import hashlib
import platform

import numpy as np

from llmzip.container import Arithmetic
from llmzip.engine.exact.rules import frequencies


class _FloatStepper:
    def __init__(self, model, n_rows: int):
        from transformers import DynamicCache
        self.model, self.cache, self.n_rows = model, DynamicCache(), n_rows

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        import torch
        with torch.inference_mode():
            ids = torch.as_tensor(np.asarray(input_ids, np.int64)).view(self.n_rows, 1)
            out = self.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
            self.cache = out.past_key_values
            return frequencies(out.logits[:, -1, :].double().numpy(), serial=True)


class FloatEngine:
    """The model's own float32 forward with transformers' KV cache (not portable)."""

    arithmetic = Arithmetic.FLOAT
    batch_invariant = False  # the decoder must feed exactly the rows the encoder fed
    full_forward = False

    def __init__(self, model):
        self.model = model
        self.hf = model.hf_model()
        self.vocab_size = self.hf.get_output_embeddings().weight.shape[0]
        self.context_start_id = model.context_start_id
        self._fingerprint = None

    def fingerprint(self) -> bytes:
        """BLAKE2b-128 of the float weights, token table and context-start id."""
        if self._fingerprint is None:
            h = hashlib.blake2b(digest_size=16)
            h.update(b"float\0" + self.context_start_id.to_bytes(4, "little"))
            h.update(self.model.tokenizer.digest())
            for name, tensor in sorted(self.hf.state_dict().items()):
                h.update(name.encode() + b"\0")
                h.update(tensor.detach().contiguous().numpy().tobytes())
            self._fingerprint = h.digest()
        return self._fingerprint

    @staticmethod
    def runtime() -> str:
        """What else the decoder must match: the torch build and CPU architecture."""
        import torch
        return f"torch {torch.__version__} {platform.machine()}"

    def stepper(self, n_rows: int, max_len: int = 0) -> _FloatStepper:
        return _FloatStepper(self.hf, n_rows)

    def cache_bytes(self, n_rows: int, max_len: int) -> int:
        """transformers' float32 keys and values for every layer."""
        c = self.hf.config
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
        return 2 * 4 * c.num_hidden_layers * n_rows * c.num_key_value_heads * max_len * head_dim
