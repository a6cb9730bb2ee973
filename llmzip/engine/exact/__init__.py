"""exact-v3: the transformer in integer arithmetic, the same tables on any machine.

`rules` (every rounding, in one place) and `tables` (exp, sigmoid, RoPE from `decimal`) are
the arithmetic; `weights` quantizes a checkpoint; `network` is the forward written once;
`stepper` the decoder's KV-cached steps; `engine` puts them behind the codec's contract.
`backend` is the seam where kernels plug in: `cpu/` (numba: one module per instruction set)
and `device/` (torch: the whole network on a device). `v2` is exact-v2, frozen, for old
archives.
"""
