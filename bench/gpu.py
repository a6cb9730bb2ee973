"""The exact engine on a GPU: the CPU's archives byte for byte, and how fast, in one run.

    python bench/gpu.py [--device cuda] [--text-mb 10] [--budget-s 420] [--ab 16x1024]
                        [--short-messages 100] [--profile-bytes 50000] [--out DIR]

Made for a machine with a CUDA device and no network, lent for a few minutes: one run does
it all within --budget-s (8 minutes by default, leaving a rerun's time), and prints and
writes (DIR/gpu.json after every phase, so a run cut short still says what it measured,
and gpu.md at the end) what it measured:
1. identity: on the committed tiny models and on a random-weight model of exactly
   SmolLM2-135M's shapes, archives compressed on the device equal the numba backend's on
   this machine byte for byte, and each decodes the other's; tests/golden's exact-v3
   archives of the tiny models decode on the device;
2. throughput on >= --text-mb MB of real text found on the machine (its Python standard
   library's sources, concatenated): compress and decompress KB/s and tokens/s, and the
   device's memory peak, with the random-weight SmolLM2-shaped model (the real weights do
   not fit the 64 MiB the machine is sent; a random model's predictions cost the coder
   more bits than the real model's, never fewer steps, and every segment is sent to the
   model, where LZMA would beat it): each direction is timed on a short prefix first, and
   where the whole text would outrun the budget, measured on the longest prefix that fits;
   the table says how many bytes each direction coded;
3. corpus/alice29.txt whole, both directions, on the same model;
4. one encoder forward (--ab segments x positions) with each of the torch backend's
   products, float32 GEMMs and int8 tensor cores (where exact on the device): its time,
   and the outputs compared;
5. short messages (corpus/short, up to --short-messages, as many as fit a quarter of the
   time left) compressed and decompressed one by one and batched: seconds each way, the
   ratio, the archives compared;
6. where the time goes (--profile-bytes of the text, fewer where the budget asks): the
   encoder's forwards against the whole compression; a decoder step's launches, table
   reads (the device's time) and host coding.
--device torch:cpu runs the same script on the CPU: a dry run, with --text-mb small.

On the lent machine (Python 3.12; constriction is not installed there), the version CI
installs (0.5.0, a 0.4 MB wheel; the numba side of the identity check runs it too): here,
once,
    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_17_x86_64 -d .whl constriction==0.5.0
then run with carry [".whl"]:
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl &&
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 bench/gpu.py --out $OUT
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from llmzip import Codec  # noqa: E402
from llmzip.engine.factory import open_engine  # noqa: E402

SMOLLM2_SHAPES = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, head_dim=64,
                      vocab_size=49152, rms_norm_eps=1e-5, max_position_embeddings=8192,
                      tie_word_embeddings=True, model_type="llama",
                      rope_parameters={"rope_theta": 100000.0, "rope_type": "default"})
TINY = ["tiny-llama", "tiny-gemma"]
PROBE_BYTES = 64_000  # throughput: the prefix timed first, to size what fits the budget


def stdlib_text(mb: float) -> bytes:
    """The Python standard library's sources, sorted by path, until `mb` megabytes."""
    chunks, size = [], 0
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        data = path.read_bytes()
        chunks.append(data)
        size += len(data)
        if size >= mb * 1e6:
            break
    return b"".join(chunks)[:int(mb * 1e6)]


def smollm2_shaped(directory: Path, text: bytes, seed: int = 0) -> Path:
    """A Llama of SmolLM2-135M's shapes with random weights (seeded) and a byte-level BPE
    of up to 49,152 tokens trained on `text`: the real model's work per token."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=SMOLLM2_SHAPES["vocab_size"],
                                  special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([text[:4_000_000].decode("utf-8", "replace")], trainer)
    tok.save(str(directory / "tokenizer.json"))
    c = dict(SMOLLM2_SHAPES, bos_token_id=0, eos_token_id=0)
    (directory / "config.json").write_text(json.dumps(c))
    rng = np.random.default_rng(seed)
    d, f, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    nq, nkv = c["num_attention_heads"], c["num_key_value_heads"]

    def w(*shape):
        return (rng.standard_normal(shape, np.float32) * 0.02).astype(np.float32)

    state = {"model.embed_tokens.weight": w(c["vocab_size"], d),
             "model.norm.weight": np.ones(d, np.float32)}
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        state.update({p + "self_attn.q_proj.weight": w(nq * hd, d),
                      p + "self_attn.k_proj.weight": w(nkv * hd, d),
                      p + "self_attn.v_proj.weight": w(nkv * hd, d),
                      p + "self_attn.o_proj.weight": w(d, nq * hd),
                      p + "mlp.gate_proj.weight": w(f, d), p + "mlp.up_proj.weight": w(f, d),
                      p + "mlp.down_proj.weight": w(d, f),
                      p + "input_layernorm.weight": np.ones(d, np.float32),
                      p + "post_attention_layernorm.weight": np.ones(d, np.float32)})
    save_file(state, str(directory / "model.safetensors"))
    return directory


class Clock:
    def __init__(self, budget_s: float):
        self.start, self.budget_s = time.perf_counter(), budget_s

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.start)


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def identity(model: str, device: str, texts: dict[str, bytes], settings: dict) -> list[dict]:
    """Each text compressed by numba and on the device: equal bytes, and each decodes
    the other's."""
    rows = []
    for name, data in texts.items():
        cpu = Codec(model, device="cpu", **settings).compress(data)
        dev = Codec(model, device=device, **settings).compress(data)
        rows.append({"model": Path(model).name, "text": name, "bytes": len(data),
                     "archive_bytes": len(dev), "identical": cpu == dev,
                     "device_decodes_cpu": Codec(model, device=device).decompress(cpu) == data,
                     "cpu_decodes_device": Codec(model, device="cpu").decompress(dev) == data})
        print(f"identity {rows[-1]}", flush=True)
    return rows


def golden(device: str) -> list[dict]:
    rows, here = [], ROOT / "tests"
    for name in TINY:
        for suffix in ("", "-counts", "-counts-copies", "-counts-tar", "-counts-runs"):
            blob = (here / "golden" / f"{name}-exact-v3{suffix}.llmz").read_bytes()
            want = (here / "golden" / f"{name}-exact-v3{suffix}.orig").read_bytes()
            got = Codec(str(here / "models" / name), device=device).decompress(blob)
            rows.append({"golden": f"{name}-exact-v3{suffix}", "decodes": got == want})
    print(f"golden {rows}", flush=True)
    return rows


def memory_peak_mb(device: str) -> float | None:
    import torch
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return None


@contextlib.contextmanager
def model_always():
    """Every text segment to the model: a random model's predictions lose to LZMA, which
    would otherwise take the text and leave the model's steps unmeasured."""
    from llmzip.codec import segments
    real = segments.model_saving
    segments.model_saving = lambda raw_bytes, model_bits, ratio: float(raw_bytes)
    try:
        yield
    finally:
        segments.model_saving = real


@contextlib.contextmanager
def timing(owner, names: list[str], seconds: dict, synchronize=None):
    """Time every call of these methods of `owner` into seconds[name] (and count them in
    seconds[name + " calls"]); with synchronize, wait for the device before the clock
    stops, so that the time is the work's and not its launch's."""
    real = {name: getattr(owner, name) for name in names}

    def timed_method(name):
        def method(*args, **kwargs):
            started = time.perf_counter()
            out = real[name](*args, **kwargs)
            if synchronize:
                synchronize()
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started
            seconds[name + " calls"] = seconds.get(name + " calls", 0) + 1
            return out
        return method

    for name in names:
        setattr(owner, name, timed_method(name))
    try:
        yield seconds
    finally:
        for name, method in real.items():
            setattr(owner, name, method)


def where_time_goes(model: str, device: str, data: bytes, clock: Clock) -> dict:
    """Where a compression and a decompression of `data` (or of the longest prefix that
    fits 15% of the time left, at a 2,000-byte probe's pace) spend their time on the device:
    the encoder's forwards (device work, waited for), then the decoder's steps as three
    parts: launching a step's kernels (`Stepper.step`, which does not wait), the reads
    from its tables (`DeviceTables`: each waits for the device first, so they hold the
    step's device time), and the rest, the host's coder and adapter. What to build next
    (CUDA graphs, joined reads, the coder on more cores) follows from which part leads."""
    import torch

    from llmzip.engine.exact.device.backend import Stepper, TorchBackend
    from llmzip.engine.exact.device.tables import DeviceTables
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    reads = ["_summarized", "gather", "bucket_sums", "bucket_rows"]
    with model_always():
        codec = Codec(model, device=device).load()
        probe = data[:2000]
        _, probe_s = timed(lambda: codec.decompress(codec.compress(probe)))
        data = _fitting(data, probe_s / len(probe), 0.15 * clock.left())
        with timing(TorchBackend, ["_hidden"], {}, sync) as encoder:
            blob, compress_s = timed(codec.compress, data)
        with timing(Stepper, ["step"], {}) as steps, timing(DeviceTables, reads, {}) as read:
            restored, decompress_s = timed(codec.decompress, blob)
    n_steps = steps.get("step calls", 0)
    read_s = sum(read.get(name, 0.0) for name in reads)
    row = {"bytes": len(data), "round_trip": restored == data, "compress_s": compress_s,
           "forward_s": encoder.get("_hidden", 0.0), "decompress_s": decompress_s,
           "steps": n_steps, "launch_s": steps.get("step", 0.0), "reads_s": read_s,
           "reads": sum(read.get(name + " calls", 0) for name in reads),
           "host_s": decompress_s - steps.get("step", 0.0) - read_s}
    print(f"where {row}", flush=True)
    return row


def throughput(model: str, device: str, name: str, data: bytes, clock: Clock) -> dict:
    """Compress `data` whole on the device; decompress it, or, where the decode would
    outrun the budget (timed on a prefix first), the longest prefix that fits. Every
    segment goes to the model (`model_always`)."""
    with model_always():
        return _throughput(model, device, name, data, clock)


def _throughput(model: str, device: str, name: str, data: bytes, clock: Clock) -> dict:
    """Timed on a prefix first (1/40, at most PROBE_BYTES: fewer rows a step, so a
    slower pace than the whole text's, never a faster one), both ways; then the longest prefix whose compression
    fits 40% of the time left is compressed, and the longest prefix of that whose
    decompression fits 80% of what is left then is decompressed. The table says how many
    bytes each direction coded."""
    import torch
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    codec = Codec(model, device=device).load()
    probe = data[:max(min(len(data) // 40, PROBE_BYTES), 1)]
    probe_blob, probe_c = timed(codec.compress, probe)
    _, probe_d = timed(codec.decompress, probe_blob)
    # longer texts code no slower per byte (fuller batches and waves)
    coded = _fitting(data, probe_c / len(probe), 0.4 * clock.left())
    (blob, stats), compress_s = timed(codec.compress_with_stats, coded)
    row = {"text": name, "bytes": len(coded), "tokens": stats.n_tokens,
           "archive_bytes": len(blob), "bpb": 8 * len(blob) / len(coded),
           "compress_s": compress_s, "compress_kb_s": len(coded) / 1e3 / compress_s,
           "compress_tok_s": stats.n_tokens / compress_s}
    decoded = _fitting(coded, probe_d / len(probe), 0.8 * clock.left())
    if len(decoded) < len(coded):
        blob = codec.compress(decoded)
    restored, decompress_s = timed(codec.decompress, blob)
    row.update({"decompressed_bytes": len(decoded), "round_trip": restored == decoded,
                "decompress_s": decompress_s,
                "decompress_kb_s": len(decoded) / 1e3 / decompress_s,
                "decompress_tok_s": stats.n_tokens * len(decoded) / len(coded) / decompress_s,
                "memory_peak_mb": memory_peak_mb(device)})
    print(f"throughput {row}", flush=True)
    return row


def _fitting(data: bytes, seconds_per_byte: float, seconds: float) -> bytes:
    """The longest prefix of data coded within `seconds` at this pace."""
    return data[:max(1, min(len(data), int(seconds / max(seconds_per_byte, 1e-12))))]


def products_ab(model: str, device: str, segments: int, length: int) -> list[dict]:
    """One encoder forward of `segments` x `length` random positions with each of the torch
    backend's products (float32 GEMMs; int8 limbs, where exact on the device): seconds,
    the fastest of three after a first, and whether the outputs equal float32's."""
    import torch

    from llmzip.engine.exact.device.backend import DeviceNetwork
    from llmzip.engine.exact.device.products import Float32Products, int8_for
    engine = open_engine(model, None, device=device)[0]
    where = torch.device(engine.backend.device)
    ids = torch.randint(0, engine.net.vocab_size, (segments, length),
                        generator=torch.Generator().manual_seed(1)).to(where)
    rows, reference = [], None
    for kind, products in (("float32", Float32Products()), ("int8", int8_for(where))):
        if products is None:
            rows.append({"products": kind, "exact_here": False})
            continue
        dnet = DeviceNetwork(engine.net, where, products)
        times = []
        for _ in range(4):
            started = time.perf_counter()
            out = dnet.hidden(ids)
            if where.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - started)
        reference = out if reference is None else reference
        rows.append({"products": kind, "exact_here": True, "positions": segments * length,
                     "forward_s": min(times[1:]), "same_as_float32": torch.equal(out, reference)})
        print(f"products {rows[-1]}", flush=True)
        del dnet
    return rows


def short_messages(model: str, device: str, count: int, clock: Clock) -> dict:
    """Up to `count` of bench/short.py's timed messages (corpus/short) compressed and
    decompressed one by one (`Codec.compress`, `decompress`), then batched
    (`compress_many`, `decompress_many`), every message to the model (`model_always`):
    seconds each way, and whether the archives are the same. Timed on the first 4 one by
    one first, and as many taken as fit 25% of the time left."""
    sys.path.insert(0, str(ROOT / "bench"))
    from short import speed_messages
    messages = speed_messages()[:count]
    with model_always():
        codec = Codec(model, device=device).load()
        codec.decompress_many(codec.compress_many(messages[:2]))  # first use, untimed
        _, probe_s = timed(lambda: [codec.decompress(codec.compress(m)) for m in messages[:4]])
        messages = messages[:max(4, min(len(messages), int(0.25 * clock.left() / probe_s * 4)))]
        alone, compress_s = timed(lambda: [Codec(model, device=device).compress(m)
                                           for m in messages])
        restored, decompress_s = timed(lambda: [Codec(model, device=device).decompress(b)
                                                for b in alone])
        batched, batch_compress_s = timed(codec.compress_many, messages)
        batch_restored, batch_decompress_s = timed(codec.decompress_many, batched)
    row = {"messages": len(messages), "alone_compress_s": compress_s,
           "alone_decompress_s": decompress_s, "batch_compress_s": batch_compress_s,
           "batch_decompress_s": batch_decompress_s, "identical": alone == batched,
           "round_trip": restored == batch_restored == messages,
           "speedup": (compress_s + decompress_s) / (batch_compress_s + batch_decompress_s)}
    print(f"short {row}", flush=True)
    return row


def report(result: dict) -> str:
    lines = [f"Measured on {result['device_name']} (`--device {result['device']}`), torch "
             f"{result['torch']}, {result['backend']}; `bench/gpu.py`, model: "
             f"{result['model']}.", "",
             "| text | bytes | tokens | bits/byte | compress KB/s | tok/s | decompress KB/s "
             "| tok/s | decoded bytes | GPU memory peak MB | round trip |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in result["throughput"]:
        peak = f"{r['memory_peak_mb']:,.0f}" if r["memory_peak_mb"] is not None else ""
        lines.append(f"| {r['text']} | {r['bytes']:,} | {r['tokens']:,} | {r['bpb']:.3f} | "
                     f"{r['compress_kb_s']:,.1f} | {r['compress_tok_s']:,.0f} | "
                     f"{r['decompress_kb_s']:,.1f} | {r['decompress_tok_s']:,.0f} | "
                     f"{r['decompressed_bytes']:,} | {peak} | "
                     f"{'ok' if r['round_trip'] else 'FAILED'} |")
    if result.get("products"):
        lines.append("")
    for r in result.get("products", []):
        lines.append(f"Encoder forward with {r['products']} products: " + (
            f"{r['positions']:,} positions in {r['forward_s']:.3f} s "
            f"({r['positions'] / r['forward_s']:,.0f} positions/s), outputs "
            f"{'equal to' if r['same_as_float32'] else 'DIFFERENT from'} float32's."
            if r["exact_here"] else "not exact on this device, not used."))
    if result.get("short"):
        r = result["short"]
        lines += ["", f"{r['messages']} short messages (corpus/short), one by one: compressed "
                  f"in {r['alone_compress_s']:.1f} s and decompressed in "
                  f"{r['alone_decompress_s']:.1f} s; batched: {r['batch_compress_s']:.1f} s "
                  f"and {r['batch_decompress_s']:.1f} s: {r['speedup']:.1f}x; archives "
                  f"{'identical' if r['identical'] else 'DIFFERENT'} either way, "
                  f"{'all decoded' if r['round_trip'] else 'a round trip FAILED'}."]
    if result.get("where"):
        w, n = result["where"], max(result["where"]["steps"], 1)
        lines += ["", f"Where the time goes, {w['bytes']:,} bytes: compressed in "
                  f"{w['compress_s']:.2f} s, {w['forward_s']:.2f} s of it the forwards; "
                  f"decompressed in {w['decompress_s']:.2f} s, {w['steps']:,} steps: a step "
                  f"{1e3 * w['decompress_s'] / n:.2f} ms, of which launching its kernels "
                  f"{1e3 * w['launch_s'] / n:.2f} ms, reading its tables "
                  f"{1e3 * w['reads_s'] / n:.2f} ms ({w['reads'] / n:.1f} reads, each "
                  f"waiting for the device) and the host's coder and adapter "
                  f"{1e3 * w['host_s'] / n:.2f} ms"
                  + ("." if result["device"].startswith("cuda") else
                     " (torch on the CPU does not run ahead: the launches hold the work).")]
    same = all(r["identical"] and r["device_decodes_cpu"] and r["cpu_decodes_device"]
               for r in result["identity"])
    lines += ["", f"Identity with the numba backend ({len(result['identity'])} archives): "
              f"{'byte for byte, each decoding the other' if same else 'FAILED'}; golden "
              f"archives: {'all decode' if all(g['decodes'] for g in result['golden']) else 'FAILED'}."]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--text-mb", type=float, default=10.0)
    parser.add_argument("--budget-s", type=float, default=420.0)
    parser.add_argument("--identity-bytes", type=int, default=20000,
                        help="text compressed by both backends with the SmolLM2-shaped model")
    parser.add_argument("--ab", default="16x1024",
                        help="segments x positions of the products' encoder-forward A/B")
    parser.add_argument("--short-messages", type=int, default=100,
                        help="messages one by one against batched (fewer where the budget asks)")
    parser.add_argument("--profile-bytes", type=int, default=50_000,
                        help="text whose compression and decompression are broken down")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    def save() -> None:  # after every phase: a run cut short still returns what it measured
        (args.out / "gpu.json").write_text(json.dumps(result, indent=1))

    import torch
    clock = Clock(args.budget_s)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    corpus = ROOT / "corpus"
    text = stdlib_text(args.text_mb)
    slices = {"alice29.txt[:3000]": (corpus / "alice29.txt").read_bytes()[:3000],
              "argparse.py[:3000]": (corpus / "argparse.py").read_bytes()[:3000]}
    result = {"device": args.device, "device_name": device_name, "torch": torch.__version__,
              "model": "random weights of SmolLM2-135M's shapes (seed 0), a BPE of up to "
                       "49,152 tokens trained on the text"}
    result["identity"] = [row for name in TINY for row in identity(
        str(ROOT / "tests" / "models" / name), args.device, slices,
        dict(segment_tokens=128, group_size=4))]
    save()
    result["golden"] = golden(args.device)
    save()
    with tempfile.TemporaryDirectory() as tmp:
        model = str(smollm2_shaped(Path(tmp), text))
        engine = open_engine(model, None, device=args.device)[0]  # quantized once, untimed
        result["backend"] = engine.backend.label  # which products: int8 where exact there
        n = args.identity_bytes
        result["identity"] += identity(model, args.device, {f"stdlib[:{n}]": text[:n]},
                                       dict(segment_tokens=512, group_size=4))
        save()
        segments, length = map(int, args.ab.split("x"))
        result["products"] = products_ab(model, args.device, segments, length)
        save()
        result["short"] = short_messages(model, args.device, args.short_messages, clock)
        save()
        result["where"] = where_time_goes(model, args.device, text[:args.profile_bytes],
                                          clock)
        save()
        result["throughput"] = [throughput(model, args.device, f"stdlib ({len(text):,} bytes)",
                                           text, clock)]
        save()
        alice = (corpus / "alice29.txt").read_bytes()
        first = result["throughput"][0]
        needed = len(alice) / 1e3 * (1 / first["compress_kb_s"] + 1 / first["decompress_kb_s"])
        if needed < clock.left():  # at the speeds just measured
            result["throughput"].append(throughput(model, args.device, "alice29.txt", alice,
                                                   clock))
    save()
    text_report = report(result)
    (args.out / "gpu.md").write_text(text_report + "\n")
    print(text_report)
    ok = all(r["identical"] and r["device_decodes_cpu"] and r["cpu_decodes_device"]
             for r in result["identity"]) and all(g["decodes"] for g in result["golden"]) \
        and all(r["round_trip"] for r in result["throughput"]) \
        and all(r.get("same_as_float32", True) for r in result["products"]) \
        and result["short"]["identical"] and result["short"]["round_trip"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
