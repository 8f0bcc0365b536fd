"""Image-text retrieval recall@K, both directions, over the gallery gathered from every rank."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lightning_modules.metrics.sync import NAN, RaggedMetric, SimBlocks, cat_state, cosine_blocks, hash_ids, percent


def _recall(blocks: SimBlocks, text_to_image: Tensor, num_images: int, ks: Sequence[int]) -> dict[str, Tensor]:
    """Recall@K both ways from similarity rows (texts x images), in two passes so rows can be chunked.

    IR: a text is a hit if its image ranks in the top K. TR: an image is a hit if its best-ranked caption
    ranks in the top K among all texts. Rank = number of strictly more similar candidates.
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
    tr_rank = tr_rank[best > -math.inf]  # images without a caption have no TR query
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

    Images are deduplicated by id (the first embedding seen is kept), texts are not.

    Args:
        ks: the K of recall@K; 1 must be among them (``mean_r1``).
    """

    def __init__(self, ks: Sequence[int] = (1, 5, 10), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        assert 1 in ks, f"ks must contain 1 for mean_r1, got {ks}"
        self.ks = tuple(ks)
        self.names = (*(f"{d}_r{k}" for d in ("ir", "tr") for k in self.ks), "mean_r1")
        for state in ("text_emb", "text_image_ids", "image_emb", "image_ids"):
            self.add_state(state, [], dist_reduce_fx="cat")

    def update(
        self, text_emb: Tensor, text_image_ids: Sequence[str], image_emb: Tensor, image_ids: Sequence[str]
    ) -> None:
        """Args: text_emb (N, D) with its image's id per text; image_emb (M, D) with ids (repeats allowed)."""
        assert len(text_emb) == len(text_image_ids) and len(image_emb) == len(image_ids), "one id per embedding"
        self.text_emb.append(text_emb.detach().float())
        self.text_image_ids.append(hash_ids(text_image_ids).to(self.device))
        self.image_emb.append(image_emb.detach().float())
        self.image_ids.append(hash_ids(image_ids).to(self.device))

    def compute(self) -> dict[str, Tensor]:
        no_ids = torch.empty(0, dtype=torch.long, device=self.device)
        text_ids, image_ids = cat_state(self.text_image_ids, no_ids), cat_state(self.image_ids, no_ids)
        if text_ids.numel() == 0:
            return dict.fromkeys(self.names, torch.tensor(NAN))
        assert image_ids.numel() > 0, f"{text_ids.numel()} texts but no gallery image: pass image_emb/image_ids"
        text_emb, image_emb = cat_state(self.text_emb, no_ids), cat_state(self.image_emb, no_ids)
        gallery, inverse = torch.unique(image_ids, return_inverse=True)  # (I,), (M,)
        first = torch.full_like(gallery, len(image_ids)).scatter_reduce(
            0, inverse, torch.arange(len(image_ids), device=inverse.device), reduce="amin"
        )
        pos = torch.searchsorted(gallery, text_ids).clamp(max=len(gallery) - 1)
        missing = int((gallery[pos] != text_ids).sum())
        assert missing == 0, f"{missing} texts name an image id that is not in the gallery"
        out = _recall(cosine_blocks(text_emb, image_emb[first]), pos, len(gallery), self.ks)
        out["mean_r1"] = (out["ir_r1"] + out["tr_r1"]) / 2
        return {k: out[k] for k in self.names}
