"""One converter per real dataset: ``CONVERTERS[name](src=, images=, out=, split=, lang=, workers=, allow_missing=,
max_per_shard=, max_side=, fields=)`` reads the original files and writes shards + manifest (returned).

Names are the catalogue's task names (``contracts.catalogue``) plus the generic ``jsonl`` and ``hf_disk``.
Where each dataset comes from and the exact build command: ``docs/real_data.md``.
"""

from __future__ import annotations

from . import generic, iglue, img2dataset, text_cls, text_mc, text_qa, text_retrieval, text_tagging, vl_english
from .common import Converter

CONVERTERS: dict[str, Converter] = {
    # IGLUE test sets (and their few-shot / translate-test files)
    "xvnli": iglue.xvnli,
    "xgqa": iglue.xgqa,
    "marvl": iglue.marvl,
    "xflickrco": iglue.xflickrco,
    "wit": iglue.wit,
    # English vision-language
    "snli_ve": vl_english.snli_ve,
    "gqa": vl_english.gqa,
    "vqav2": vl_english.vqav2,
    "nlvr2": vl_english.nlvr2,
    "flickr30k": vl_english.flickr30k,
    "coco": vl_english.coco,
    # text classification
    "mnli": text_cls.mnli,
    "xnli": text_cls.xnli,
    "anli": text_cls.anli,
    "qqp": text_cls.qqp,
    "sst2": text_cls.sst2,
    "pawsx": text_cls.pawsx,
    # extractive QA
    "squad_v1": text_qa.squad_v1,
    "squad_v2": text_qa.squad_v2,
    "xquad": text_qa.xquad,
    "mlqa": text_qa.mlqa,
    "tydiqa": text_qa.tydiqa,
    # multiple choice
    "hellaswag": text_mc.hellaswag,
    "cosmosqa": text_mc.cosmosqa,
    "commonsenseqa": text_mc.commonsenseqa,
    # tagging
    "udpos": text_tagging.udpos,
    "panx": text_tagging.panx,
    "ccg": text_tagging.ccg,
    # sentence retrieval
    "bucc": text_retrieval.bucc,
    "tatoeba": text_retrieval.tatoeba,
    # generic
    "jsonl": generic.jsonl,
    "hf_disk": generic.hf_disk,
    "img2dataset": img2dataset.img2dataset,  # indexes img2dataset's tars in place (start-phase captions)
}
