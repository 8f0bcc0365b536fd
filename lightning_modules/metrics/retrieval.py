"""Image-text retrieval recall@K, both directions, over the gallery gathered from every rank."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_modules.metrics.outcomes import synced
from lightning_modules.metrics.sync import NAN, RaggedMetric, SimBlocks, cat_state, cosine_blocks, hash_ids, percent


def _ranks(blocks: SimBlocks, text_to_image: Tensor, num_images: int) -> tuple[Tensor, Tensor, Tensor]:
    """(IR rank per text (T,), TR rank per captioned image, which images are captioned (I,) bool), from
    similarity rows (texts x images) in two passes so rows can be chunked.

    IR: a text's rank is the number of images strictly more similar than its own. TR: an image's rank is
    the number of texts strictly more similar than its best-ranked own caption.
    """
    ir_rank = torch.empty_like(text_to_image)  # (T,)
    best = torch.full((num_images,), -math.inf, device=text_to_image.device)  # (I,) best own-caption sim
    for start, sim in blocks():  # sim (c, I)
        t2i = text_to_image[start : start + sim.shape[0]]
        own = sim.gather(1, t2i[:, None])  # (c, 1)
        ir_rank[start : start + sim.shape[0]] = (sim > own).sum(1)
        best.scatter_reduce_(0, t2i, own[:, 0], reduce="amax")
    tr_rank = torch.zeros(num_images, dtype=torch.long, device=best.device)
    for _, sim in blocks():
        tr_rank += (sim > best[None]).sum(0)
    captioned = best > -math.inf  # images without a caption have no TR query
    return ir_rank, tr_rank[captioned], captioned


def _recall(blocks: SimBlocks, text_to_image: Tensor, num_images: int, ks: Sequence[int]) -> dict[str, Tensor]:
    """Recall@K both ways: a query is a hit when its rank (``_ranks``) is below K."""
    ir_rank, tr_rank, _ = _ranks(blocks, text_to_image, num_images)
    out = {}
    for k in ks:
        out[f"ir_r{k}"] = percent((ir_rank < k).sum(), torch.tensor(ir_rank.numel()))
        out[f"tr_r{k}"] = percent((tr_rank < k).sum(), torch.tensor(tr_rank.numel()))
    return out


def recall_at_k(sim: Tensor, text_to_image: Tensor, ks: Sequence[int] = (1, 5, 10)) -> dict[str, Tensor]:
    """Recall@K (%) from a full similarity matrix ``sim`` (T, I); ``text_to_image`` (T,) indexes each text's
    image. Returns ``ir_r{k}`` (text->image) and ``tr_r{k}`` (image->text) for every k."""
    return _recall(lambda: iter([(0, sim)]), text_to_image, sim.shape[1], ks)


class RetrievalRecall(RaggedMetric):
    """Image-text retrieval recall@K (%) over the whole gallery gathered from every rank.

    Images are deduplicated by id (the first embedding seen is kept), texts are not. Per-query outcomes
    (``outcomes()``): one row per text (IR query, key ``<image id>#<n>`` for its n-th caption seen) and per
    captioned image (TR query, key = image id) with its ``rank`` and ``ir``/``tr`` flags.

    Args:
        ks: the K of recall@K; 1 must be among them (``mean_r1``).
    """

    def __init__(self, ks: Sequence[int] = (1, 5, 10), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert 1 in ks, f"ks must contain 1 for mean_r1, got {ks}"
        self.ks = tuple(ks)
        self.names = (*(f"{d}_r{k}" for d in ("ir", "tr") for k in self.ks), "mean_r1")
        for state in ("text_emb", "text_image_ids", "image_emb", "image_ids", "text_keys"):
            self.add_state(state, [], dist_reduce_fx="cat")
        self._names: dict[int, str] = {}
        self._captions: dict[str, int] = {}  # captions seen per image id: the n of a text key

    def update(
        self,
        text_emb: Tensor,
        text_image_ids: Sequence[str],
        image_emb: Tensor,
        image_ids: Sequence[str],
        keys: Sequence[str] | None = None,
    ) -> None:
        """Args: text_emb (N, D) with its image's id per text; image_emb (M, D) with ids (repeats allowed);
        keys: unused (queries are keyed by image id), accepted so every metric takes the batch keys."""
        assert len(text_emb) == len(text_image_ids) and len(image_emb) == len(image_ids), "one id per embedding"
        text_keys = []
        for image_id in map(str, text_image_ids):  # an image's captions arrive with it, so on one rank
            self._captions[image_id] = self._captions.get(image_id, -1) + 1
            text_keys.append(f"{image_id}#{self._captions[image_id]}")
        for name in (*text_keys, *map(str, image_ids)):
            self._names[int(hash_ids([name])[0])] = name
        self.text_keys.append(hash_ids(text_keys).to(self.device))
        self.text_emb.append(text_emb.detach().float())
        self.text_image_ids.append(hash_ids(text_image_ids).to(self.device))
        self.image_emb.append(image_emb.detach().float())
        self.image_ids.append(hash_ids(image_ids).to(self.device))

    def _gallery(self) -> tuple[SimBlocks, Tensor, Tensor] | None:
        """(similarity blocks texts x gallery, each text's gallery index, gallery ids); None with no text."""
        no_ids = torch.empty(0, dtype=torch.long, device=self.device)
        text_ids, image_ids = cat_state(self.text_image_ids, no_ids), cat_state(self.image_ids, no_ids)
        if text_ids.numel() == 0:
            return None
        assert image_ids.numel() > 0, f"{text_ids.numel()} texts but no gallery image: pass image_emb/image_ids"
        text_emb, image_emb = cat_state(self.text_emb, no_ids), cat_state(self.image_emb, no_ids)
        gallery, inverse = torch.unique(image_ids, return_inverse=True)  # (I,), (M,)
        first = torch.full_like(gallery, len(image_ids)).scatter_reduce(
            0, inverse, torch.arange(len(image_ids), device=inverse.device), reduce="amin"
        )
        pos = torch.searchsorted(gallery, text_ids).clamp(max=len(gallery) - 1)
        missing = int((gallery[pos] != text_ids).sum())
        assert missing == 0, f"{missing} texts name an image id that is not in the gallery"
        return cosine_blocks(text_emb, image_emb[first]), pos, gallery

    def compute(self) -> dict[str, Tensor]:
        found = self._gallery()
        if found is None:
            return dict.fromkeys(self.names, torch.tensor(NAN))
        blocks, pos, gallery = found
        out = _recall(blocks, pos, len(gallery), self.ks)
        out["mean_r1"] = (out["ir_r1"] + out["tr_r1"]) / 2
        return {k: out[k] for k in self.names}

    def reset(self) -> None:
        super().reset()
        self._names, self._captions = {}, {}

    def outcomes(self) -> dict[str, list] | None:
        """Per query: ``key``, ``key_hash``, ``rank``, ``ir`` (1 for a text query), ``tr`` (1 for an image)."""
        with synced(self):
            found = self._gallery()
            if found is None:
                return {"key": [], "key_hash": [], "rank": [], "ir": [], "tr": []}
            text_keys = cat_state(self.text_keys, torch.empty(0, dtype=torch.long, device=self.device))
        blocks, pos, gallery = found
        ir_rank, tr_rank, captioned = _ranks(blocks, pos, len(gallery))
        hashes = [*text_keys.tolist(), *gallery[captioned].tolist()]
        n_ir, n_tr = len(ir_rank), len(tr_rank)
        return {
            "key": [self._names.get(h) for h in hashes],
            "key_hash": hashes,
            "rank": [*ir_rank.tolist(), *tr_rank.tolist()],
            "ir": [1] * n_ir + [0] * n_tr,
            "tr": [0] * n_ir + [1] * n_tr,
        }

    def outcome_formulas(self) -> dict[str, tuple]:
        formulas: dict[str, tuple] = {}
        for d in ("ir", "tr"):
            formulas.update({f"{d}_r{k}": ("recall", "rank", k, d) for k in self.ks})
        formulas["mean_r1"] = ("mean_recall", "rank", 1, "ir", "tr")
        return formulas
