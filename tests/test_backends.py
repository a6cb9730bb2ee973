"""Backend conformance: every registered backend of exact-v3 gives the reference integers.

In the manner of ggml's test-backend-ops, but exact: each operation a backend provides
(`engine.exact.backend.Backend`: products for a segment, the head and a step, attention over
a segment and over a KV cache) is run at the extremes of the arithmetic's bounds and on
random inputs, and compared with `np.array_equal` to the reference written out here in int64
sums and the rules of `engine.exact.rules`. Then the whole network: the full forward against
the steps, rows alone or together, archives byte for byte and golden archives, through each
backend. The backends are every device CI can run: numba's kernels ('cpu') and the torch
backend on the CPU ('torch:cpu'); on a machine with a GPU, 'cuda' too.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ADVERSARIAL_ROWS, alice_ids, corpus_file, full_tables, stepped_tables

from llmzip import Codec
from llmzip.engine import factory
from llmzip.engine.exact import rules as ar
from llmzip.engine.exact.backend import BACKENDS, open_backend, resolve_device
from llmzip.engine.exact.cpu.backend import STEP_KERNELS, StepProducts
from llmzip.engine.exact.cpu.products import int8_matmul_is_exact
from llmzip.engine.exact.device import products as device_products
from llmzip.engine.exact.weights import NO_GAIN, Linear
from llmzip.engine.factory import open_engine
from llmzip.errors import LlmzipError


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


DEVICES = ["cpu", "torch:cpu", "torch:cpu int8", pytest.param("cuda", marks=pytest.mark.skipif(
    "not __import__('torch').cuda.is_available()", reason="no CUDA device"))]
RNG = np.random.default_rng(7)
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def opened(monkeypatch):
    """A DEVICES entry as a `--device`: 'torch:cpu int8' is 'torch:cpu' with the torch
    backend's int8 products switched on (`device.products`: their float64 twin of
    `torch._int_mm`, which the GPU runs where it proves exact)."""
    def device(name: str) -> str:
        if name.endswith(" int8"):
            monkeypatch.setattr(device_products, "CPU_PRODUCTS", "int8")
            factory._opened.cache_clear()  # engines are kept per device: open a new one
            name = name.split()[0]
        return name
    yield device
    factory._opened.cache_clear()


@pytest.fixture(params=DEVICES)
def backend(request, opened):
    return open_backend(*resolve_device(opened(request.param)))


def test_every_registered_backend_is_under_test():
    assert {resolve_device(d)[0] for d in ("cpu", "torch:cpu")} == set(BACKENDS)


def test_the_torch_backend_runs_int8_products_where_asked_and_says_so(opened):
    backend = open_backend(*resolve_device(opened("torch:cpu int8")))
    assert backend.products.name == "int8" and "int8 products" in backend.label


def test_the_int8_check_tells_an_exact_int8_matmul_from_a_saturating_one():
    """torch's int8 matmul on this CPU is exact with VNNI and saturates without: the
    device's check (`int8_exact`, which a GPU runs before using int8) must tell the two
    apart as the CPU kernels' own check does."""
    assert device_products.int8_exact(torch.device("cpu")) == int8_matmul_is_exact()


def test_auto_is_a_gpu_where_torch_sees_one_else_the_cpu_kernels():
    assert resolve_device("auto") == (("torch", "cuda:0") if _cuda() else ("numba", "cpu"))


@pytest.mark.parametrize("device, message", [
    ("tpu", "unknown device 'tpu' (auto, cpu, cuda, cuda:N or torch:cpu)"),
    ("cuda", "--device cuda: torch sees no CUDA device here"),
])
def test_a_device_that_cannot_run_is_refused_in_one_line(device, message):
    if device == "cuda" and _cuda():
        pytest.skip("this machine has a CUDA device")
    with pytest.raises(LlmzipError, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_device(device)


# --- products ---------------------------------------------------------------------------------



def _extreme_operands(row: np.ndarray, n_rows: int, n_out: int):
    """n_rows quantized rows at the L1 cap (the row, negated, reversed, halved...) and
    int8 weights at +-127 matching the first row's signs (the largest sum the bounds allow),
    the rest random."""
    x = np.vstack([[row, -row, row[::-1], 0.5 * row][i % 4] for i in range(n_rows)])
    xq, factor = np.empty(x.shape, np.float32), np.empty(n_rows)  # the engine's types
    ar.quantize_rows(x, xq, factor)
    signs = np.where(xq[0] >= 0, 127, -127)
    w = RNG.integers(-127, 128, (n_out, x.shape[1]))
    w[0], w[1], w[-1] = signs, -signs, signs[::-1]
    w8 = w.astype(np.int8)
    w8.setflags(write=False)  # as the engine's memory-mapped weights
    return xq, factor, Linear(w8, RNG.random(n_out) * 1e-2, NO_GAIN)


def _reference(xq, factor, lin):
    exact = xq.astype(np.int64) @ lin.w8.astype(np.int64).T
    scaled = np.empty(exact.shape)
    ar.scale_products(exact, factor, lin.scale, scaled)
    return exact, scaled


def _assert_products(products, xq, factor, lin):
    """A `Products` gives the exact integers, and scaled the reference's float64 numbers,
    by whichever of its two entry points the network calls."""
    exact, scaled = _reference(xq, factor, lin)
    out = np.empty(scaled.shape)
    if not products.scaled(xq, factor, lin, out):
        got = products(xq, lin)
        assert np.array_equal(got, exact)
        ar.scale_products(got, factor, lin.scale, out)
    assert np.array_equal(out, scaled)


@pytest.mark.parametrize("row", ADVERSARIAL_ROWS.values(), ids=ADVERSARIAL_ROWS.keys())
def test_segment_and_head_products_are_exact_at_the_bounds(backend, row):
    """5 rows and 80 outputs take every edge of numba's tiles (4 rows and one left over);
    300 rows take BLAS, and the torch device's GEMM."""
    for n_rows in (1, 3, 5, 300):
        xq, factor, lin = _extreme_operands(row, n_rows, 80)
        _assert_products(backend.segment_products(n_rows), xq, factor, lin)
        _assert_products(backend.head_products(n_rows, lin), xq, factor, lin)


@pytest.mark.parametrize("n_rows", [1, 2, 3, 5, 6, 7, 9, 13, 16, 17])
def test_step_products_are_exact_for_every_row_count(backend, n_rows):
    """A step's products as rows end with their segments: every row count up to beyond
    the widest kernel, on a weight matrix every kernel fits (80 x 2048) and one none of the
    byte kernels does (75 outputs, 2,000 features)."""
    for n_out, width in ((80, 2048), (75, 2000)):
        row = ADVERSARIAL_ROWS["heavy tail"][:width]
        xq, factor, lin = _extreme_operands(row, n_rows, n_out)
        for rows in range(n_rows, 0, -1):
            _assert_products(backend.step_products(None, n_rows, 400), xq[:rows],
                             factor[:rows], lin)


@pytest.mark.parametrize("kernel", STEP_KERNELS, ids=lambda k: k.name)
def test_every_step_kernel_of_the_registry_is_exact_where_it_runs(kernel):
    """Each fused kernel the numba backend may choose, called directly, at every row count
    it serves (up to 17), with extreme inputs and weights."""
    if not kernel.available():
        pytest.skip(f"{kernel.name}: not available on this CPU")
    products = StepProducts(1, 1, {})
    for n_rows in range(1, min(kernel.max_rows, 17) + 1):
        xq, factor, lin = _extreme_operands(ADVERSARIAL_ROWS["flat"], n_rows, 80)
        xq[0, :5], xq[-1, 5:9] = ar.ACT_MAX, -ar.ACT_MAX  # a limb at each end
        assert kernel.fits(lin.w8)
        out = np.empty((n_rows, 80))
        kernel.run(products, xq, factor, lin, out)
        assert np.array_equal(out, _reference(xq, factor, lin)[1])


def test_the_registry_chooses_the_first_kernel_that_serves():
    products = StepProducts(2, 30, {})
    w8 = np.zeros((80, 2048), np.int8)
    first = next(k for k in STEP_KERNELS if k.name != "amx" and k.available() and k.fits(w8))
    assert products.kernel(2, w8) is first  # AMX only for segments that pay for packing
    assert products.kernel(2, np.zeros((80, 2000), np.int8)).name == "dots"  # no byte kernel fits


# --- attention --------------------------------------------------------------------------------

def _reference_attention(net, layer, q, k, v) -> np.ndarray:
    """exact-v3's attention written out: int16 queries by int8 keys summed in int64, the
    logits scaled as the kernels scale them, `fold_weights` (the integer softmax), weights x
    int8 values in int64, per position over its (sliding) window."""
    qq, qs, kq, ks, vq, vs = net.quantize_qkv(q, k, v)
    t_len, g = q.shape[0], net.groups
    k_factor = ks * net.q_factor
    out = np.empty((t_len, net.n_heads, net.head_dim))
    for t, h in np.ndindex(t_len, net.n_heads):
        kv = h // g
        lo = max(0, t - layer.window + 1) if layer.window else 0
        span = slice(lo, t + 1)
        dots = kq[span, kv].astype(np.int64) @ qq[t, h].astype(np.int64)
        logits = dots.astype(np.float64) * (qs[t, h] * k_factor[span, kv])
        folded = np.empty(t + 1 - lo)
        scale = ar.fold_weights(logits, vs[span, kv], vs[span, kv].max(), ar.ATTENTION_EXP,
                                folded)
        out[t, h] = (folded.astype(np.int64) @ vq[span, kv].astype(np.int64)) * scale
    return out.reshape(t_len, -1)


def _heads(net, length, spread, rng):
    q = rng.normal(size=(length, net.n_heads, net.head_dim)) * spread
    k = rng.normal(size=(length, net.n_kv, net.head_dim)) * spread
    v = rng.normal(size=(length, net.n_kv, net.head_dim))
    v[length // 2] = 0.0  # a value of scale 0
    q[0, 0] = 1e6  # a query far past the others: one weight takes all
    k[length - 1] = k[0]  # tied scores
    return q, k, v


@pytest.mark.parametrize("length", [1, 2, 7, 300])
@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gemma"])
def test_segment_attention_equals_the_written_rule(request, backend, model, length):
    """On every kind of layer (Gemma 3's sliding window of 16 too), odd lengths and one
    longer than a block of the torch backend's queries, sharp and flat attention."""
    net = open_engine(request.getfixturevalue(model), None)[0].net
    rng = np.random.default_rng(length)
    for layer in {layer.window or 0: layer for layer in net.layers}.values():
        for spread in (0.05, 3.0, 300.0):
            q, k, v = _heads(net, length, spread, rng)
            assert np.array_equal(backend.attend_segment(net, layer, q.copy(), k.copy(), v.copy()),
                                  _reference_attention(net, layer, q, k, v))


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gemma"])
def test_cached_attention_equals_the_segment_attention_step_by_step(request, backend, model):
    """A KV cache fed the rows' q, k, v one position a step gives, at each position, the
    segment attention's numbers for that position: for 3 rows at once, past a window."""
    net = open_engine(request.getfixturevalue(model), None)[0].net
    length, n_rows, width = 40, 3, (net.n_heads + 2 * net.n_kv) * net.head_dim
    qkv = np.random.default_rng(1).normal(size=(n_rows, length, width)) * 4
    cache = backend.kv_cache(net, n_rows, length)
    for index, layer in enumerate(net.layers):
        want = []
        for r in range(n_rows):
            heads = net.heads(layer, qkv[r].copy(), np.arange(length))
            want.append(_reference_attention(net, layer, *heads))
        for pos in range(length):
            got = cache.attend(index, layer, qkv[:, pos].copy(), pos)
            assert np.array_equal(got, np.stack([w[pos] for w in want]))


# --- the whole network --------------------------------------------------------------------------

N_TOKENS = 80  # longer than the tiny Gemma's 16-token sliding window





@pytest.fixture(params=["tiny_llama", "tiny_gemma"])
def model_name(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("device", DEVICES)
def test_full_forward_equals_steps_and_the_numba_backend(model_name, device, opened):
    """300 tokens: BLAS rows in the encoder, two blocks of the torch backend's attention."""
    device = opened(device)
    reference, model = open_engine(model_name, None)
    engine = open_engine(model_name, None, device=device)[0]
    assert engine.backend.device == resolve_device(device)[1]
    ids = model.tokenizer.encode(corpus_file("alice29.txt")[:1500])[:300]
    full = full_tables(engine, ids)
    assert np.array_equal(full, stepped_tables(engine, [ids])[0])
    assert np.array_equal(full, full_tables(reference, ids))


@pytest.mark.parametrize("device", DEVICES)
def test_a_row_gets_the_same_tables_alone_or_with_seven_others(model_name, device, opened):
    device = opened(device)
    engine, model = open_engine(model_name, None, device=device)
    sequences = [alice_ids(model, 40, offset=1000 * i) for i in range(8)]
    together = stepped_tables(engine, sequences)
    for i in (0, 5):
        assert np.array_equal(together[i], stepped_tables(engine, [sequences[i]])[0])
        assert np.array_equal(together[i], full_tables(engine, sequences[i]))


@pytest.mark.parametrize("device", DEVICES)
def test_rows_that_end_early_leave_the_others_unchanged(tiny_llama, device, opened):
    device = opened(device)
    engine, model = open_engine(tiny_llama, None, device=device)
    long, short = alice_ids(model, 30), alice_ids(model, 12, offset=500)
    stepper = engine.stepper(2, 30)
    inputs, tables = np.array([engine.context_start_id] * 2), []
    for t in range(30):
        tables.append(np.asarray(stepper.step(inputs))[0])
        inputs = np.array([long[t], short[t]]) if t + 1 < len(short) else np.array([long[t]])
    assert np.array_equal(np.stack(tables), full_tables(engine, long))


@pytest.mark.parametrize("device", DEVICES[1:])
@pytest.mark.parametrize("settings", [dict(segment_tokens=300), dict(segment_tokens=64,
                                                                      group_size=4)],
                         ids=["one segment", "groups of four"])
def test_archives_are_the_same_bytes_on_every_backend_and_decode_on_each(tiny_llama, device,
                                                                           settings, opened):
    device = opened(device)
    data = corpus_file("argparse.py")[:3000]
    cpu = Codec(tiny_llama, **settings).compress(data)
    other = Codec(tiny_llama, device=device, **settings).compress(data)
    assert cpu == other
    assert Codec(tiny_llama, device=device).decompress(cpu) == data


@pytest.mark.parametrize("device", DEVICES[1:])
@pytest.mark.parametrize("suffix", ["", "-counts", "-counts-copies", "-counts-tar",
                                    "-counts-runs"])
@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gemma"])
def test_golden_archives_decode_through_every_backend(name, suffix, device, monkeypatch,
                                                      opened):
    device = opened(device)
    monkeypatch.chdir(Path(__file__).parent)
    blob = (GOLDEN / f"{name}-exact-v3{suffix}.llmz").read_bytes()
    assert Codec(device=device, model=f"models/{name}").decompress(blob) == \
        (GOLDEN / f"{name}-exact-v3{suffix}.orig").read_bytes()


def test_an_engine_per_device_shares_one_network(tiny_llama):
    """The device is chosen when an engine is opened: engines of one model on two devices
    are two engines, over the same integer network, neither changed by the other."""
    cpu = open_engine(tiny_llama, None)[0]
    torch_cpu = open_engine(tiny_llama, None, device="torch:cpu")[0]
    assert cpu is not torch_cpu and cpu.net is torch_cpu.net
    assert (cpu.backend.name, torch_cpu.backend.name) == ("numba", "torch")
    assert open_engine(tiny_llama, None)[0].backend is cpu.backend



# --- the small rules, on a torch device ---------------------------------------------------------

TORCH_DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    "not __import__('torch').cuda.is_available()", reason="no CUDA device"))]


def _rows(n_rows=6, width=64, seed=0):
    """Rows at the edges of the rules: huge and tiny, ties at .5 after scaling, zeros,
    a negative zero, one constant row, and random ones."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n_rows, width)) * np.array([1, 1e-3, 1e3, 50, 1, 1])[:n_rows, None]
    x[0, :4] = [1e6, -1e6, 0.0, -0.0]
    x[1] = 0.0
    x[2, :3] = [ar.ACT_MAX, ar.ACT_MAX / 2 + 0.5, -(ar.ACT_MAX / 2 + 0.5)]  # .5 ties at scale 1
    x[3] = 7.0
    x[4] = rng.standard_cauchy(width)
    return x


@pytest.fixture(params=TORCH_DEVICES)
def torch_device(request):
    import torch
    open_backend("torch", request.param)  # float32 products made exact
    return torch.device(request.param)


def _t(a, device):
    import torch
    return torch.as_tensor(np.array(a), device=device)


def test_quantizing_and_norms_equal_the_numba_rules(torch_device):
    from llmzip.engine.exact.device import rules as tr
    x = _rows()
    gain = 0.2 * np.exp(np.random.default_rng(1).random(x.shape[1]) * np.log(300))
    gain.setflags(write=False)
    q, s = np.empty(x.shape, np.float32), np.empty(len(x))
    ar.quantize_rows(x, q, s)
    tq, ts = tr.quantize(_t(x, torch_device), ar.L1_CAP)
    assert np.array_equal(tq.cpu().numpy(), q) and np.array_equal(ts.cpu().numpy(), s)
    for kept in (NO_GAIN, gain):
        q, f = np.empty(x.shape, np.float32), np.empty(len(x))
        ar.norm_quantize_rows(x, kept, 1e-6, q, f)
        tq, tf = tr.norm_quantize(_t(x, torch_device), _t(kept, torch_device) if kept.size
                                  else None, 1e-6)
        assert np.array_equal(tq.cpu().numpy(), q) and np.array_equal(tf.cpu().numpy(), f)
        h = x[::-1].copy()
        ar.add_post_norm(h, x, kept, 1e-6)
        got = tr.add_post_norm(_t(x[::-1], torch_device), _t(x, torch_device),
                               _t(kept, torch_device) if kept.size else None, 1e-6)
        assert np.array_equal(got.cpu().numpy(), h)
    heads = x.reshape(len(x), 4, -1)
    normed = heads.copy()
    ar.head_norm(normed, gain[:heads.shape[-1]].copy(), 1e-6)
    got = tr.head_norm(_t(heads, torch_device), _t(gain[:heads.shape[-1]], torch_device), 1e-6)
    assert np.array_equal(got.cpu().numpy(), normed)


def test_products_scaling_rope_and_the_activation_equal_the_numba_rules(torch_device):
    from llmzip.engine.exact.device import rules as tr
    rng = np.random.default_rng(2)
    acc = rng.integers(-2**24 + 1, 2**24, (5, 7)).astype(np.float32)
    row, col = rng.random(5) * 1e-3, rng.random(7) * 1e-2
    out = np.empty(acc.shape)
    ar.scale_products(acc, row, col, out)
    got = tr.scale_products(_t(acc, torch_device), _t(row, torch_device), _t(col, torch_device))
    assert np.array_equal(got.cpu().numpy(), out)
    x = _rows().reshape(6, 2, 32)
    cos, sin = rng.standard_normal((9, 32)), rng.standard_normal((9, 32))
    positions = np.array([0, 8, 3, 3, 1, 7])
    rotated = x.copy()
    ar.rotate(rotated, positions, cos, sin)
    got = tr.rotate(_t(x, torch_device), _t(cos[positions][:, None], torch_device),
                    _t(sin[positions][:, None], torch_device))
    assert np.array_equal(got.cpu().numpy(), rotated)
    gate_up = np.concatenate([np.linspace(-20, 20, 4001)[None].repeat(2, 0),
                              rng.standard_normal((2, 4001))], axis=1)
    tables = tr.Tables(torch_device)
    for gelu in (False, True):
        got = tr.activation(_t(gate_up, torch_device), gelu, tables)
        assert np.array_equal(got.cpu().numpy(), ar.activation(gate_up, gelu))


def test_keys_values_and_queries_quantize_as_the_numba_rules(torch_device):
    from llmzip.engine.exact.device import rules as tr
    x = _rows().reshape(6, 4, 16)
    kq, ks = np.empty(x.shape, np.int8), np.empty(x.shape[:2])
    ar.quantize_kv(x, kq, ks)
    tq, ts = tr.quantize_kv(_t(x, torch_device))
    assert np.array_equal(tq.cpu().numpy(), kq) and np.array_equal(ts.cpu().numpy(), ks)
    qq, qs = np.empty(x.shape, np.float32), np.empty(x.shape[:2])
    ar.quantize_queries(x, qq, qs)
    tq, ts = tr.quantize(_t(x, torch_device), ar.L1_CAP)
    assert np.array_equal(tq.cpu().numpy(), qq) and np.array_equal(ts.cpu().numpy(), qs)


@pytest.mark.parametrize("spread", [0.5, 40.0, 4000.0])
def test_the_integer_softmax_fold_equals_the_numba_rule(torch_device, spread):
    """Over a span inside a longer row: the torch rule sees -inf logits and zero scales
    outside it, the numba rule only the span; negative, zero and tied logits."""
    from llmzip.engine.exact.device import rules as tr
    rng = np.random.default_rng(3)
    n, lo, hi = 3000, 100, 2900
    logits = rng.standard_normal(n) * spread * ar.LOGIT_STEPS
    logits[lo:lo + 5] = [0.0, -0.0, logits[lo + 5], logits[lo + 5], -1e-300]
    v_scale = rng.random(n) * (rng.random(n) > 0.1)
    folded = np.empty(hi - lo)
    scale = ar.fold_weights(logits[lo:hi].copy(), v_scale[lo:hi], ar.top_of(v_scale[lo:hi]),
                            ar.ATTENTION_EXP, folded)
    masked = logits.copy()
    masked[:lo], masked[hi:] = -np.inf, -np.inf
    vs = v_scale.copy()
    vs[:lo], vs[hi:] = 0.0, 0.0
    got, got_scale = tr.fold_weights(_t(masked, torch_device), _t(vs, torch_device),
                                     tr.Tables(torch_device).attention_exp)
    got = got.cpu().numpy()
    assert np.array_equal(got[lo:hi], folded) and not got[:lo].any() and not got[hi:].any()
    assert got_scale.item() == scale


def test_frequencies_equal_the_numba_rule(torch_device):
    from llmzip.engine.exact.device import rules as tr
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((4, 5000)) * np.array([0.01, 1, 10, 1000])[:, None]
    logits[0, :3] = logits[0, 3]  # ties at the top
    got = tr.frequencies(_t(logits, torch_device), tr.Tables(torch_device))
    assert np.array_equal(got.cpu().numpy(), ar.frequencies(logits))
