"""Performance benchmarks (``make bench`` = ``python -m benchmarks.run_all``): figures are ratios measured side by
side in one process run, because the machines they run on are shared and noisy. Never timed assertions in tests.

- ``loader``: samples/s of the training pipeline vs a naive map-style loader and the decode-only limit.
- ``memory``: loader worker RSS over 3 epochs.
- ``step``: training steps/s under the Lightning Trainer vs a plain PyTorch loop.
- ``startup``: import and ``--help`` time vs the eager imports, per-run overhead cold process vs warm worker
  (``--make-times demo test``: the make targets' wall times too).
- ``gpu``: samples/s and model-FLOPs utilisation of the real base/large shapes (skipped without CUDA).
"""
