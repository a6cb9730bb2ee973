"""The numba backend: exact-v3's kernels on the CPU (`backend`), one module per concern.

`products` (BLAS, float32 tiles, int32 dots, torch's int8 matmul), `attention` (over a
segment or a KV cache), `scores` (attention scores by int16 pairs over key blocks), and one
module per instruction set for the decoder's products: `vnni`, `amx`, `avx2`, with the LLVM
intrinsics they share in `intrinsics`.
"""
