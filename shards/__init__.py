"""Building WebDataset shards: the writer, one converter per real dataset, the demo world, inspect/verify.

Shard layout (one directory per task dataset)::

    <dir>/manifest.json
    <dir>/<split>-<lang>-000000.tar, <split>-<lang>-000001.tar, ...

A sample is a tar group sharing ``__key__`` (letters, digits, ``_`` and ``-`` only: no dots, no path
separators, unique within a directory) with members:

- ``json``: the task fields, always ``task`` (catalogue name), ``lang``, ``id`` (the dataset's own id,
  type preserved: xFlickr&CO keeps Flickr ids as strings and COCO ids as ints), plus per family
  (``contracts.catalogue``):

  ================== ==========================================================================
  classification     ``text``, ``text_pair`` (str or null), ``label`` (int; -1 = unlabelled,
                     scored as wrong)
  image_pair         ``text``, ``label`` (0 false / 1 true); images ``img0.jpg``, ``img1.jpg``
  vqa                ``text`` (question), ``answer`` (the raw answer string), ``labels`` (answer
                     indices), ``scores`` (soft scores, same length; empty = out of vocabulary,
                     scored as wrong)
  retrieval          ``texts`` (captions of this image), ``image_id`` (str); image ``jpg``
  multiple_choice    ``text`` (context), ``choices`` (list of str), ``label`` (int)
  span_qa            ``text`` (question), ``context``, ``answers`` {``text``: [...],
                     ``answer_start``: [char offsets]} (empty lists = unanswerable)
  tagging            ``tokens`` (list of words), ``tags`` (list of label indices)
  mlm                ``text``
  sentence_retrieval ``text`` (sentence in ``lang``), ``text_pair`` (its English side) for Tatoeba;
                     BUCC adds ``side`` ("src"/"tgt") and ``gold`` (the partner id or null)
  ================== ==========================================================================

- ``jpg`` (or ``img0.jpg`` + ``img1.jpg``): JPEG re-encoded at write time so the short side is at most
  ``max_side`` (default 384). Text-only samples have no image.

``manifest.json``::

    {"writer_version": 1, "dataset": "xvnli", "created": "<iso time>",
     "tasks": {"xvnli": {"label_names": [...], "label_map": {"<source label>": <index>, ...}}},
     "shards": [{"file": "test-ar-000000.tar", "task": "xvnli", "split": "test", "lang": "ar",
                 "count": 1164, "sha256": "..."}],
     "counts": {"test": {"ar": 1164}},
     "sources": [{"path": "<as given>", "sha256": "..."}],
     "skipped": [{"key": "...", "reason": "..."}],
     "ignored": [{"path": "<file below --src not read>", "reason": "..."}]}
"""
