"""A model ready for the engines: its directory, config, lossless tokenizer and weights.

`load_model` resolves a name (`presets`), converts a GGUF once (`gguf`), and reads the
config and tokenizer; weights load on demand, as a float state for the exact engine's
quantization (`engine.exact.weights`) or as a transformers model for the float engine.
Loading a cached model needs neither torch nor transformers (tokenizers and numpy only).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from llmzip.errors import ModelUnavailableError
from llmzip.files import read_json
from llmzip.models.gguf import gguf_directory, quiet_transformers
from llmzip.models.presets import resolve
from llmzip.models.tokens import ByteTokenizer

__all__ = ["Model", "load_model", "float_state"]


# --- loading -------------------------------------------------------------------------------

def _token_id(backend, token) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    return backend.token_to_id(token) if isinstance(token, str) else None


def _context_start_id(directory: Path, backend, wanted: str | None) -> int:
    """The preset's context-start token, else the tokenizer's bos, else eos, else 0."""
    if wanted is not None and backend.token_to_id(wanted) is not None:
        return backend.token_to_id(wanted)
    settings = {**read_json(directory / "special_tokens_map.json"),
                **read_json(directory / "tokenizer_config.json")}
    for key in ("bos_token", "eos_token"):
        token_id = _token_id(backend, settings.get(key))
        if token_id is not None:
            return token_id
    return 0


def float_state(directory: Path) -> dict[str, np.ndarray]:
    """The checkpoint's weights as float32 numpy arrays (safetensors, else PyTorch files)."""
    files = sorted(directory.glob("*.safetensors"))
    state: dict[str, np.ndarray] = {}
    for f in files:
        try:
            from safetensors.numpy import load_file
            state.update({k: v.astype(np.float32) for k, v in load_file(str(f)).items()})
        except (TypeError, ValueError):  # bfloat16 has no numpy type: read through torch
            from safetensors.torch import load_file as load_torch
            state.update({k: v.float().numpy() for k, v in load_torch(str(f)).items()})
    if not files:
        import torch
        for f in sorted(directory.glob("pytorch_model*.bin")):
            state.update({k: v.float().numpy() for k, v in
                          torch.load(f, map_location="cpu", weights_only=True).items()})
    if not state:
        raise ModelUnavailableError(f"no weights (*.safetensors or pytorch_model.bin) in {directory}")
    return state


@dataclass
class Model:
    """A model ready for the engines: its directory, config and lossless tokenizer. Weights
    load on demand, as integers for the exact engine or as a transformers model (float)."""

    name: str
    directory: Path
    config: dict
    tokenizer: ByteTokenizer
    context_start_id: int
    _cached: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.config.get("model_type", "?")

    @property
    def vocab_size(self) -> int:
        return self.config["vocab_size"]

    def cached(self, key: str, build):
        """build(), once per loaded model: what an engine makes of it (the exact network,
        the transformers model) is shared by every engine opened on it."""
        if key not in self._cached:
            self._cached[key] = build()
        return self._cached[key]

    def hf_model(self):
        """The transformers model in float32 (the float engine only)."""
        return self.cached("hf", self._load_hf)

    def _load_hf(self):
        quiet_transformers()
        import torch
        from transformers import AutoModelForCausalLM
        try:
            return AutoModelForCausalLM.from_pretrained(
                self.directory, dtype=torch.float32, local_files_only=True).eval()
        except Exception as exc:
            raise ModelUnavailableError(f"cannot load model '{self.name}' "
                                        f"({type(exc).__name__}: {exc})") from exc


def load_model(model: str, from_archive: bool = False) -> Model:
    """Resolve `model`, convert a GGUF on first use, and read its config and tokenizer."""
    source = resolve(model, from_archive)
    directory = gguf_directory(source) if source.gguf_parts else Path(source.hf_location)
    config = read_json(directory / "config.json")
    if not config or not (directory / "tokenizer.json").is_file():
        raise ModelUnavailableError(f"cannot load model '{model}': {directory} lacks a "
                                    "readable config.json or a tokenizer.json")
    from tokenizers import Tokenizer
    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    start_id = _context_start_id(directory, backend, source.context_start)
    vocab = config.get("vocab_size") or backend.get_vocab_size(with_added_tokens=True)
    config["vocab_size"] = vocab
    return Model(source.name, directory, config, ByteTokenizer(backend, vocab, start_id), start_id)


