"""Per-sample outcomes: re-aggregated with their formulas they give every family's metric back, they
survive outcomes.jsonl, and a 2-rank DDP sync gathers every item exactly once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import TESTS, free_port, run_process_group, subprocess_env

from contracts.outcomes import read_outcomes, write_outcomes
from lightning_modules.metrics import (
    Accuracy,
    BuccF1,
    RetrievalRecall,
    SpanF1,
    SquadMetric,
    TatoebaAccuracy,
    VQAAccuracy,
)
from studies.stats import reaggregate


def _check(metric, expected_rows: int) -> dict[str, list]:
    """Every metric value equals its formula over the outcomes; returns the outcomes."""
    values = {k: float(v) for k, v in metric.compute().items()}
    outcomes = metric.outcomes()
    assert outcomes is not None and len(outcomes["key_hash"]) == expected_rows
    formulas = metric.outcome_formulas()
    assert formulas, type(metric).__name__
    for name, formula in formulas.items():
        assert reaggregate(outcomes, formula) == pytest.approx(values[name], abs=1e-4), name
    return outcomes


def _keys(n: int, start: int = 0) -> list[str]:
    return [f"test-en-{i:06d}" for i in range(start, start + n)]


def test_classification_and_vqa() -> None:
    acc = Accuracy()
    acc.update(torch.tensor([0, 1, 2]), torch.tensor([0, -1, 2]), keys=_keys(3))  # -1 (unlabelled) is wrong
    acc.update(torch.tensor([1, 1]), torch.tensor([0, 1]), keys=_keys(2, 3))
    out = _check(acc, 5)
    assert out["correct"] == [1, 0, 1, 0, 1] and out["key"][1] == "test-en-000001"
    vqa = VQAAccuracy()
    targets = torch.tensor([[1.0, 0.0, 0.3333], [0.0, 0.0, 0.0], [0.6667, 1.0, 0.0]])  # row 2: out of vocabulary
    vqa.update(torch.tensor([0, 1, 0]), targets, keys=_keys(3))
    assert _check(vqa, 3)["score"] == pytest.approx([1.0, 0.0, 0.6667], abs=1e-4)


def test_tagging_accuracy_and_span_f1_per_sentence() -> None:
    names = ["O", "B-PER", "I-PER", "B-LOC"]
    preds, gold = [[1, 2, 0], [3, 0], [0, 1]], [[1, 2, 0], [0, 0], [3, 1]]
    acc = Accuracy(ignore_index=-100)
    acc.update(preds, gold, keys=_keys(3))
    assert _check(acc, 3)["total"] == [3, 2, 2]
    padded = Accuracy(ignore_index=-100)  # (B, W) tensors with -100 padding: padding is not a word
    padded.update(torch.tensor([[1, 2, 0], [3, 0, 0]]), torch.tensor([[1, 2, 0], [0, 0, -100]]), keys=_keys(2))
    assert _check(padded, 2)["total"] == [3, 2]
    f1 = SpanF1(names)
    f1.update(preds, gold, keys=_keys(3))
    out = _check(f1, 3)
    assert (out["tp"], out["n_pred"], out["n_gold"]) == ([1, 0, 1], [1, 1, 1], [1, 0, 2])


def test_span_qa() -> None:
    squad = SquadMetric()
    squad.update(["the red circle", "blue", ""], [["red circle"], ["green"], []], keys=_keys(3))
    out = _check(squad, 3)
    assert out["em"] == [1.0, 0.0, 1.0]


def _retrieval_data() -> tuple[torch.Tensor, list[str], torch.Tensor, list[str]]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(5, 8, generator=gen)
    texts = torch.stack([images[i % 5] + 0.9 * torch.randn(8, generator=gen) for i in range(13)])
    return texts, [f"img{i % 5}" for i in range(13)], images, [f"img{i}" for i in range(5)]


def test_retrieval_per_query_rank() -> None:
    texts, text_ids, images, image_ids = _retrieval_data()
    metric = RetrievalRecall()
    metric.update(texts[:6], text_ids[:6], images, image_ids)
    metric.update(texts[6:], text_ids[6:], images[[4, 0]], [image_ids[4], image_ids[0]])  # images seen again
    out = _check(metric, 13 + 5)  # 13 text queries (IR), 5 captioned images (TR)
    assert len(set(out["key_hash"][:13])) == 13
    assert out["key"][:7] == ["img0#0", "img1#0", "img2#0", "img3#0", "img4#0", "img0#1", "img1#1"]
    sim = F.normalize(texts, dim=1) @ F.normalize(images, dim=1).T
    own = sim[torch.arange(13), torch.arange(13) % 5]
    assert out["rank"][:13] == (sim > own[:, None]).sum(1).tolist()


def test_tatoeba_and_bucc() -> None:
    tatoeba = TatoebaAccuracy()
    src = torch.eye(3)
    tgt = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.1]])  # src 1 -> tgt 2, src 2 -> tgt 1
    tatoeba.update(src[:2], tgt[:2], keys=_keys(2))
    tatoeba.update(src[2:], tgt[2:], keys=_keys(1, 2))
    out = _check(tatoeba, 3)
    assert (out["correct"], out["rank"]) == ([1, 0, 0], [0, 1, 1])
    emb, ids, sides, gold = _bucc_data()
    for threshold in (None, 0.5):  # the tuned threshold and a fixed one (which keeps a wrong candidate)
        bucc = BuccF1(threshold=threshold, k=1)
        bucc.update(emb, ids, sides, gold)
        out = _check(bucc, 3)  # one row per source sentence
        assert out["key"] == ["s0", "s1", "s2"] and out["n_gold"] == [1, 1, 0]


def _bucc_data() -> tuple[torch.Tensor, list[str], list[str], list[str | None]]:
    src = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]])
    tgt = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2]])
    ids, sides = ["s0", "s1", "s2", "t0", "t1", "t2"], ["src"] * 3 + ["tgt"] * 3
    return F.normalize(torch.cat([src, tgt]), dim=1), ids, sides, ["t0", "t1", None, "s0", "s1", None]


def test_mlm_without_per_sample_rows_says_incomplete() -> None:
    mlm = Accuracy(ignore_index=-100, name="mlm_acc")
    mlm.update(torch.tensor([3, 4, 5]), torch.tensor([3, 9, 5]), keys=_keys(2))  # masked tokens, not samples
    assert mlm.outcomes() is None


def test_outcomes_file_round_trip(tmp_path: Path) -> None:
    acc = Accuracy()
    acc.update(torch.tensor([0, 1]), torch.tensor([0, 0]), keys=_keys(2))
    path = write_outcomes(tmp_path, [("demo_ve", "en", acc.outcomes(), acc.outcome_formulas())], {"seed": 3})
    sets = read_outcomes(path)
    entry = sets[("demo_ve", "en")]
    assert entry["formulas"] == {"acc": ("ratio", "correct", "total")}
    assert sorted(r["correct"] for r in entry["rows"].values()) == [0, 1]
    assert {r["seed"] for r in entry["rows"].values()} == {3}
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="outcomes.jsonl:1"):
        read_outcomes(path)


# ----------------------------------------------------------------------------- DDP (2 ranks, gloo, CPU)


def _ddp_worker(rank: int, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    local = {"sync_on_compute": False}
    preds, labels, keys = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([0, -1, 2, 2, 0]), _keys(5)
    acc, ref = Accuracy(), Accuracy(**local)
    ref.update(preds, labels, keys=keys)
    if rank == 0:  # rank 1 sees nothing: its empty list states must still sync
        acc.update(preds, labels, keys=keys)
    texts, text_ids, images, image_ids = _retrieval_data()
    split, whole = RetrievalRecall(), RetrievalRecall(**local)
    whole.update(texts, text_ids, images, image_ids)
    part = [i for i in range(13) if (i % 5 < 3) == (rank == 0)]  # an image's captions come with it, on one rank
    split.update(texts[part], [text_ids[i] for i in part], images, image_ids)
    for got, want in ((acc, ref), (split, whole)):
        got.compute()
        g, w = got.outcomes(), want.outcomes()
        assert sorted(zip(g["key_hash"], *(g[c] for c in g if c not in ("key", "key_hash")))) == sorted(
            zip(w["key_hash"], *(w[c] for c in w if c not in ("key", "key_hash")))
        ), f"rank {rank} {type(got).__name__}"
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_outcomes_gather_every_item_once() -> None:
    done = run_process_group(
        [sys.executable, __file__, str(free_port())], TESTS.parent, subprocess_env(), 120, "DDP outcomes gather"
    )
    assert done.returncode == 0, done.stdout


if __name__ == "__main__":
    torch.multiprocessing.spawn(_ddp_worker, args=(int(sys.argv[1]),), nprocs=2, join=True)
