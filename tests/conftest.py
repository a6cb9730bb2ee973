"""Shared fixtures: an isolated cache, tiny models built from configs, the real corpus.

Tiny models (a 2-layer Llama and a 3-layer Gemma 3 with a 16-token sliding window, random
weights, a byte-level BPE trained here on a corpus file) are saved as Hugging Face
directories and used through `--model DIR`, the same path a user's model takes. Tests
marked `real_model` run the default SmolLM2-135M; `slow` ones need LLMZIP_SLOW=1.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus"
if not CORPUS.is_dir():  # CI clones the repo next to shared/
    CORPUS = Path(os.environ.get("LLMZIP_CORPUS", "../shared/corpus")).resolve()


def corpus_file(name: str) -> bytes:
    return (CORPUS / name).read_bytes()


def pytest_collection_modifyitems(config, items):
    if os.environ.get("LLMZIP_SLOW") != "1":
        skip = pytest.mark.skip(reason="slow tier: set LLMZIP_SLOW=1")
        for item in items:
            if "slow" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("llmzip-cache")


@pytest.fixture(autouse=True)
def isolated_cache(cache_dir, monkeypatch):
    """Never touch the user's cache; conversions are shared within one test session."""
    monkeypatch.setenv("LLMZIP_CACHE", str(cache_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _train_tokenizer(text: str, vocab_size: int, drop_bytes=()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if drop_bytes:  # a vocabulary without some bytes, as SmolLM2's lacks 21
        from llmzip.tokens import _gpt2_unicode_to_byte
        to_byte = _gpt2_unicode_to_byte()
        alphabet = [c for c in alphabet if to_byte[c] not in drop_bytes]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator([text], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>",
                                   eos_token="<|endoftext|>")


def _train(model, tokenizer, steps: int) -> None:
    """A few seconds of Adam on alice29, so the tiny model predicts text better than LZMA
    and the model path of the codec is really exercised."""
    import torch
    text = corpus_file("alice29.txt").decode("latin-1")
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        starts = torch.randint(0, len(ids) - 129, (16,), generator=gen)
        batch = torch.stack([ids[s:s + 129] for s in starts])
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1].clone()).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _spread_norm_gains(model) -> None:
    """Gemma 3 270M's trained (1 + w) gains span 0.16 to 300 across one norm's channels
    (exact arithmetic once lost 41% to folding them into int8 weights); give the tiny model
    norms before a linear layer a spread of 0.2 to 60."""
    import torch
    gen = torch.Generator().manual_seed(0)
    for name, weight in model.named_parameters():
        if name.endswith(("input_layernorm.weight", "pre_feedforward_layernorm.weight",
                          "model.norm.weight")):
            log_gain = torch.rand(weight.shape, generator=gen) * math.log(300) + math.log(0.2)
            weight.data = torch.exp(log_gain) - 1


def _save_tiny(path: Path, arch: str, seed: int, drop_bytes=(), train_steps=300) -> Path:
    import torch
    from transformers import (Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig,
                              LlamaForCausalLM)

    tokenizer = _train_tokenizer(corpus_file("alice29.txt").decode("latin-1")[:60000], 400,
                                 drop_bytes)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if arch == "llama":
        config = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                             max_position_embeddings=4096, tie_word_embeddings=True,
                             bos_token_id=0, eos_token_id=0)
        model = LlamaForCausalLM(config)
    else:
        config = Gemma3TextConfig(vocab_size=vocab, hidden_size=64, intermediate_size=128,
                                  num_hidden_layers=3, num_attention_heads=2,
                                  num_key_value_heads=1, head_dim=32, sliding_window=16,
                                  layer_types=["sliding_attention", "sliding_attention",
                                               "full_attention"],
                                  query_pre_attn_scalar=32, max_position_embeddings=4096,
                                  bos_token_id=0, eos_token_id=0, pad_token_id=0)
        model = Gemma3ForCausalLM(config)
        _spread_norm_gains(model)
    if train_steps:
        _train(model, tokenizer, train_steps)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory) -> str:
    return str(_save_tiny(tmp_path_factory.mktemp("tiny-llama"), "llama", seed=1))


@pytest.fixture(scope="session")
def tiny_llama_other(tmp_path_factory) -> str:
    """Same shape and tokenizer as tiny_llama, untrained: a mismatched (and useless) model."""
    return str(_save_tiny(tmp_path_factory.mktemp("tiny-llama-2"), "llama", seed=2,
                          train_steps=0))


@pytest.fixture(scope="session")
def tiny_gemma(tmp_path_factory) -> str:
    return str(_save_tiny(tmp_path_factory.mktemp("tiny-gemma"), "gemma", seed=3))


@pytest.fixture(scope="session")
def tiny_llama_missing_bytes(tmp_path_factory) -> str:
    return str(_save_tiny(tmp_path_factory.mktemp("tiny-llama-nobytes"), "llama", seed=4,
                          drop_bytes=(0x04, 0x1D, 0xC0, 0xFF)))


@pytest.fixture(scope="session")
def codecs():
    """One Codec per (model, settings) for the session: models load once."""
    from llmzip import Codec
    made = {}

    def get(model, **settings):
        key = (model, tuple(sorted(settings.items())))
        if key not in made:
            made[key] = Codec(model, **settings)
        return made[key]
    return get
