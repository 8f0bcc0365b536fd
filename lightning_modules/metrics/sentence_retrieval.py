"""XTREME's sentence retrieval: Tatoeba accuracy and BUCC bitext-mining F1 (ratio margin)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lightning_modules.metrics.outcomes import synced
from lightning_modules.metrics.sync import NAN, RaggedMetric, cat_state, cosine_blocks, hash_ids, percent


def knn(queries: Tensor, keys: Tensor, k: int, chunk: int = 4096) -> tuple[Tensor, Tensor]:
    """Top-``k`` cosine neighbours of each query among ``keys``: (similarities, indices), both (Q, k)."""
    sims, idx = zip(*(sim.topk(min(k, keys.shape[0]), dim=1) for _, sim in cosine_blocks(queries, keys, chunk)()))
    return torch.cat(sims), torch.cat(idx)


class TatoebaAccuracy(RaggedMetric):
    """Tatoeba accuracy (%): how often a source sentence's nearest target (cosine, over all targets) is its
    own translation. Pairs are aligned by row. Outcomes: per source sentence ``correct``, ``total`` (1) and
    ``rank`` (targets strictly more similar than its translation)."""

    names = ("tatoeba_acc",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("src_emb", [], dist_reduce_fx="cat")
        self.add_state("tgt_emb", [], dist_reduce_fx="cat")
        self.add_state("keys", [], dist_reduce_fx="cat")
        self.add_state("missing_keys", torch.tensor(0), dist_reduce_fx="sum")
        self._names: dict[int, str] = {}

    def update(self, src_emb: Tensor, tgt_emb: Tensor, keys: Sequence[str] | None = None) -> None:
        """Args: src_emb (N, D), tgt_emb (N, D): row i of each is one translation pair; keys: one per pair."""
        assert src_emb.shape == tgt_emb.shape, f"src {tuple(src_emb.shape)} vs tgt {tuple(tgt_emb.shape)}"
        self.src_emb.append(src_emb.detach().float())
        self.tgt_emb.append(tgt_emb.detach().float())
        if keys is None or len(keys) != len(src_emb):
            self.missing_keys += 1
            return
        hashes = hash_ids(keys)
        self._names.update(zip(hashes.tolist(), map(str, keys)))
        self.keys.append(hashes.to(self.device))

    def _ranks(self) -> Tensor | None:
        empty = torch.empty(0, device=self.device)
        src, tgt = cat_state(self.src_emb, empty), cat_state(self.tgt_emb, empty)
        if src.numel() == 0:
            return None
        own = (F.normalize(src, dim=-1) * F.normalize(tgt, dim=-1)).sum(-1)  # (N,)
        return torch.cat([(sim > own[s : s + len(sim), None]).sum(1) for s, sim in cosine_blocks(src, tgt)()])

    def compute(self) -> dict[str, Tensor]:
        empty = torch.empty(0, device=self.device)
        src, tgt = cat_state(self.src_emb, empty), cat_state(self.tgt_emb, empty)
        if src.numel() == 0:
            return {"tatoeba_acc": torch.tensor(NAN)}
        _, nearest = knn(src, tgt, k=1)  # (N, 1)
        hits = (nearest[:, 0] == torch.arange(len(src), device=nearest.device)).sum()
        return {"tatoeba_acc": percent(hits, torch.tensor(len(src)))}

    def reset(self) -> None:
        super().reset()
        self._names = {}

    def outcomes(self) -> dict[str, list] | None:
        """Per source sentence: ``key``, ``key_hash``, ``correct`` (its nearest target is its own), ``rank``."""
        with synced(self):
            if int(self.missing_keys) > 0:
                return None
            ranks = self._ranks()
            hashes = cat_state(self.keys, torch.empty(0, dtype=torch.long, device=self.device)).tolist()
            if ranks is None:
                return {"key": [], "key_hash": [], "correct": [], "total": [], "rank": []}
            nearest = knn(*(cat_state(s, torch.empty(0)) for s in (self.src_emb, self.tgt_emb)), k=1)[1][:, 0]
            correct = (nearest == torch.arange(len(nearest), device=nearest.device)).long().tolist()
            return {
                "key": [self._names.get(h) for h in hashes],
                "key_hash": hashes,
                "correct": correct,
                "total": [1] * len(correct),
                "rank": ranks.tolist(),
            }

    def outcome_formulas(self) -> dict[str, tuple]:
        return {"tatoeba_acc": ("ratio", "correct", "total")}


def margin_candidates(src: Tensor, tgt: Tensor, k: int = 4) -> tuple[Tensor, Tensor]:
    """XTREME/LASER bitext mining (``mine_bitext``: ratio margin, ``retrieval="max"``).

    score(x, y) = cos(x, y) / ((mean cos of x's k nearest y + mean cos of y's k nearest x) / 2). Each
    source proposes its best target and each target its best source; candidates are taken in descending
    score, skipping any whose source or target is already used. Returns pairs (P, 2) of (src, tgt) row
    indices and their scores (P,), best first.
    """
    fwd_sim, fwd_idx = knn(src, tgt, k)  # (S, k)
    bwd_sim, bwd_idx = knn(tgt, src, k)  # (T, k)
    fwd_mean, bwd_mean = fwd_sim.mean(1), bwd_sim.mean(1)
    fwd_score = fwd_sim / ((fwd_mean[:, None] + bwd_mean[fwd_idx]) / 2)  # (S, k)
    bwd_score = bwd_sim / ((bwd_mean[:, None] + fwd_mean[bwd_idx]) / 2)  # (T, k)
    fwd_best, bwd_best = fwd_score.argmax(1, keepdim=True), bwd_score.argmax(1, keepdim=True)
    src_rows = torch.cat([torch.arange(len(src), device=src.device), bwd_idx.gather(1, bwd_best)[:, 0]])
    tgt_rows = torch.cat([fwd_idx.gather(1, fwd_best)[:, 0], torch.arange(len(tgt), device=src.device)])
    scores = torch.cat([fwd_score.gather(1, fwd_best)[:, 0], bwd_score.gather(1, bwd_best)[:, 0]])
    order = scores.argsort(descending=True).tolist()
    seen_src, seen_tgt, keep = set(), set(), []
    for i, s, t in zip(order, src_rows[order].tolist(), tgt_rows[order].tolist()):
        if s not in seen_src and t not in seen_tgt:
            seen_src.add(s)
            seen_tgt.add(t)
            keep.append(i)
    return torch.stack([src_rows[keep], tgt_rows[keep]], 1), scores[keep]


def best_f1_threshold(scores: Sequence[float], correct: Sequence[bool], num_gold: int) -> float:
    """XTREME's ``bucc_optimize``: the score threshold (midway to the next candidate) of maximal F1, taking
    candidates best-first. ``scores`` must be sorted descending; 0.0 when no candidate is correct."""
    threshold, best_f1, n_correct = 0.0, 0.0, 0
    for i, (score, ok) in enumerate(zip(scores, correct)):
        n_correct += ok
        if n_correct == 0:
            continue
        precision, recall = n_correct / (i + 1), n_correct / num_gold
        f1 = 2 * precision * recall / (precision + recall)
        if f1 > best_f1:
            best_f1 = f1
            threshold = (score + scores[i + 1]) / 2 if i + 1 < len(scores) else score
    return threshold


class BuccF1(RaggedMetric):
    """BUCC bitext mining F1 (%), as XTREME scores it: ratio-margin candidates (k neighbours), then a score
    threshold. With ``threshold=None`` the threshold maximising F1 on these data is chosen (XTREME tunes it
    on the dev/"sample" set) and returned as ``bucc_threshold``; pass that value for test data.

    Args:
        threshold: fixed margin-score threshold (a candidate is kept if its score >= threshold).
        k: neighbourhood size of the margin (XTREME: 4).
    """

    names = ("bucc_f1", "bucc_precision", "bucc_recall", "bucc_threshold")

    def __init__(self, threshold: float | None = None, k: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threshold, self.k = threshold, k
        for state in ("emb", "ids", "is_tgt", "gold"):
            self.add_state(state, [], dist_reduce_fx="cat")
        self._names: dict[int, str] = {}

    def reset(self) -> None:
        super().reset()
        self._names = {}

    def update(
        self,
        emb: Tensor,
        ids: Sequence[str],
        sides: Sequence[str],
        gold: Sequence[str | None],
        keys: Sequence[str] | None = None,
    ) -> None:
        """One sentence per sample, as BUCC shards hold them.

        Args:
            emb: sentence embeddings (B, D).
            ids: each sentence's id.
            sides: ``"src"`` (the non-English side) or ``"tgt"`` (English) per sentence.
            gold: each sentence's gold partner id, None if it has none. A pair named by both of its
                sentences (or on several ranks) counts once.
            keys: unused (outcomes are keyed by sentence id); accepted so every metric takes the batch keys.
        """
        assert len(emb) == len(ids) == len(sides) == len(gold), f"{len(emb)} embeddings, {len(ids)} ids, ..."
        assert set(sides) <= {"src", "tgt"}, f"sides must be 'src' or 'tgt', got {sorted(set(sides))}"
        pairs = [(i, g) if s == "src" else (g, i) for i, s, g in zip(ids, sides, gold) if g is not None]
        self.emb.append(emb.detach().float())
        hashes = hash_ids(ids)
        self._names.update(zip(hashes.tolist(), map(str, ids)))
        self.ids.append(hashes.to(self.device))
        self.is_tgt.append(torch.tensor([s == "tgt" for s in sides], dtype=torch.long, device=self.device))
        self.gold.append(hash_ids([i for pair in pairs for i in pair]).reshape(-1, 2).to(self.device))  # (G, 2)

    def _mine(self) -> tuple[Tensor, list[tuple[int, int]], list[bool], list[float], set, float] | None:
        """(source ids, predicted pairs, correct flags, scores, gold pairs, threshold); None without both sides."""
        none = torch.empty(0, dtype=torch.long, device=self.device)
        ids, is_tgt, gold = (cat_state(s, none) for s in (self.ids, self.is_tgt, self.gold))
        src, tgt = is_tgt == 0, is_tgt == 1
        if not src.any() or not tgt.any():
            return None
        emb = cat_state(self.emb, none)  # (N, D)
        src_ids, tgt_ids = ids[src], ids[tgt]
        pairs, scores = margin_candidates(emb[src], emb[tgt], self.k)
        predicted = list(zip(src_ids[pairs[:, 0]].tolist(), tgt_ids[pairs[:, 1]].tolist()))
        gold_set = set(map(tuple, gold.reshape(-1, 2).tolist()))
        correct = [p in gold_set for p in predicted]
        scores_list = scores.tolist()
        threshold = self.threshold
        if threshold is None:
            threshold = best_f1_threshold(scores_list, correct, len(gold_set))
        return src_ids, predicted, correct, scores_list, gold_set, threshold

    def compute(self) -> dict[str, Tensor]:
        mined = self._mine()
        if mined is None:
            return dict.fromkeys(self.names, torch.tensor(NAN))
        _, _, correct, scores_list, gold_set, threshold = mined
        n_pred = sum(s >= threshold for s in scores_list)
        n_correct = sum(ok for ok, s in zip(correct, scores_list) if s >= threshold)
        precision = n_correct / n_pred if n_pred else 0.0
        recall = n_correct / len(gold_set) if gold_set else 0.0
        f1 = 2 * precision * recall / (precision + recall) if n_correct else 0.0
        values = (100 * f1, 100 * precision, 100 * recall, threshold)
        return {k: torch.tensor(float(v)) for k, v in zip(self.names, values)}

    def outcomes(self) -> dict[str, list] | None:
        """Per source sentence: ``tp`` (its kept candidate is a gold pair), ``n_pred`` (it has a kept
        candidate: at most one, candidates never share a source), ``n_gold`` (its gold pairs), at the
        threshold ``compute`` uses (set ``threshold`` first, as the module does for test data)."""
        with synced(self):
            mined = self._mine()
            if mined is None:
                return {"key": [], "key_hash": [], "tp": [], "n_pred": [], "n_gold": []}
            src_ids, predicted, correct, scores, gold_set, threshold = mined
        hashes = src_ids.tolist()
        row = {h: i for i, h in enumerate(hashes)}
        tp, n_pred, n_gold = ([0] * len(hashes) for _ in range(3))
        for (s, _), ok, score in zip(predicted, correct, scores):
            if score >= threshold:
                n_pred[row[s]] += 1
                tp[row[s]] += int(ok)
        for s, _ in gold_set:
            if s in row:
                n_gold[row[s]] += 1
        return {
            "key": [self._names.get(h) for h in hashes],
            "key_hash": hashes,
            "tp": tp,
            "n_pred": n_pred,
            "n_gold": n_gold,
        }

    def outcome_formulas(self) -> dict[str, tuple]:
        return {
            "bucc_f1": ("f1", "tp", "n_pred", "n_gold"),
            "bucc_precision": ("ratio", "tp", "n_pred"),
            "bucc_recall": ("ratio", "tp", "n_gold"),
        }
