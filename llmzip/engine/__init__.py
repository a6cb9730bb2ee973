"""Engines: a model behind one contract, next-token frequency tables for many segments at once.

`contract` is what the codec sees; `factory.open_engine` the one way to get an engine:
- exact-v3 (`exact`): integer arithmetic, identical tables on any machine, run by a backend
  (`exact.backend`: numba's CPU kernels, or torch on a device);
- exact-v2 (`exact.v2`, frozen): decodes archives of llmzip 0.1;
- float (`float`): the model's own float32 forward through transformers, for architectures
  exact arithmetic does not cover; its tables depend on the torch build, CPU and threads.
Every engine turns logits into frequencies with `exact.rules.frequencies`.
"""

from llmzip.engine.contract import Engine, Stepper
from llmzip.engine.factory import open_engine

__all__ = ["Engine", "Stepper", "open_engine"]
