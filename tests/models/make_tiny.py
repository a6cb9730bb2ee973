"""How the committed tiny test models were made (run once; the suite never trains).

    python tests/models/make_tiny.py   # rewrites tests/models/tiny-*

Each is a Hugging Face directory: a byte-level BPE of 400 tokens trained on alice29, and
random weights trained with Adam for a few seconds on alice29, so the model codes text
better than LZMA and the model path of the codec is really exercised. Re-running it gives
other weights (training is not bit-reproducible across machines), so the golden archives
in tests/golden would no longer match: they pin these files.
"""

from __future__ import annotations

import math
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE.parents[1] / "corpus"


def _train_tokenizer(text: str, vocab_size: int, drop_bytes=()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if drop_bytes:  # a vocabulary without some bytes, as SmolLM2's lacks 21
        from llmzip.models.tokens import _gpt2_unicode_to_byte
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
    text = CORPUS.joinpath("alice29.txt").read_bytes().decode("latin-1")
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
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    tokenizer = _train_tokenizer(CORPUS.joinpath("alice29.txt").read_bytes().decode("latin-1")[:60000], 400,
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



def main() -> None:
    for name, arch, seed, drop, steps in [
            ("tiny-llama", "llama", 1, (), 300), ("tiny-llama-untrained", "llama", 2, (), 0),
            ("tiny-gemma", "gemma", 3, (), 300),
            ("tiny-llama-nobytes", "llama", 4, (0x04, 0x1D, 0xC0, 0xFF), 300)]:
        out = HERE / name
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir()
        _save_tiny(out, arch, seed, drop_bytes=drop, train_steps=steps)
        print(name, file=sys.stderr)


if __name__ == "__main__":
    main()
