"""What the data side, the model side and the study share: the contracts between them.

A leaf package: it imports no other package of the project, so ``shards/``, ``datamodules/``,
``lightning_modules/`` and ``studies/`` can all read it without depending on each other
(``tests/test_imports.py`` checks it).

- ``catalogue``: the task catalogue (task name -> family, head, modality, metrics, languages, label names).
- ``fields``: the json fields a sample of each family carries (the shard contract), which of them a negative
  control permutes.
- ``ranges``: numeric settings' ranges, declared on the dataclass fields they check.
- ``outcomes``: the per-sample outcomes file a test run writes and the study reads.
- ``files``: files written whole or not at all, and the one file hash.
"""
