"""The torch backend: exact-v3's whole network on a torch device (a GPU, or the CPU in CI).

`rules` is `engine.exact.rules` in torch, operation for operation; `backend` the forward,
the KV-cached steps and the backend protocol over them.
"""
