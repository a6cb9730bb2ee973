"""Models: which one a name means, its files and tokenizer, loaded once and cached.

`presets` (the table and `--model` resolution), `gguf` (a GGUF converted once into the
cache), `model` (config, tokenizer and weights ready for an engine), `tokens` (bytes <->
token ids, lossless for any input). Nothing here imports an engine.
"""

from llmzip.models.model import Model, load_model
from llmzip.models.presets import (
           DEFAULT_MODEL,
           PRESETS,
           list_models,
           model_file_bytes,
           resolve,
)

__all__ = ["Model", "load_model", "DEFAULT_MODEL", "PRESETS", "list_models", "model_file_bytes",
           "resolve"]
