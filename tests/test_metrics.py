"""Metrics against hand-computed values, the factory over the catalogue, and a 2-rank DDP sync."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import TESTS, free_port, run_process_group, subprocess_env

from contracts.catalogue import TASKS
from lightning_modules.families import build_metrics
from lightning_modules.metrics import (
    Accuracy,
    BuccF1,
    RetrievalRecall,
    SpanF1,
    SquadMetric,
    TatoebaAccuracy,
    VQAAccuracy,
    iob2_spans,
    normalize_answer,
    recall_at_k,
    squad_em_f1,
    vqa_official_score,
    vqa_soft_score,
)


def _values(out: dict[str, torch.Tensor]) -> dict[str, float]:
    return {k: round(float(v), 4) for k, v in out.items()}


# ----------------------------------------------------------------------------- accuracy, VQA


def test_accuracy_counts_unlabelled_as_wrong() -> None:
    metric = Accuracy()
    metric.update(torch.tensor([0, 1, 2, 1]), torch.tensor([0, -1, 2, 2]))
    assert _values(metric.compute()) == {"acc": 50.0}


def test_accuracy_ignore_index_only_when_asked() -> None:
    metric = Accuracy(ignore_index=-100)
    metric.update(torch.tensor([[0, 5, 0]]), torch.tensor([[0, -100, 1]]))
    assert _values(metric.compute()) == {"acc": 50.0}


def test_accuracy_of_word_tag_lists() -> None:
    metric = build_metrics(TASKS["udpos"])
    metric.update(preds=[[1, 2, 3], [4]], labels=[[1, 2, 0], [4]])
    assert _values(metric.compute()) == {"acc": 75.0}


def test_vqa_accuracy_soft_scores_and_oov() -> None:
    metric = VQAAccuracy()
    targets = torch.tensor([[1.0, 0.3, 0.0], [0.0, 0.6, 0.0], [0.0, 0.0, 0.0]])  # third: out of vocabulary
    metric.update(torch.tensor([0, 1, 2]), targets)
    assert _values(metric.compute()) == {"vqa_acc": round(100 * 1.6 / 3, 4)}


def test_vqa_scores() -> None:
    assert vqa_soft_score(2) == pytest.approx(2 / 3) and vqa_soft_score(5) == 1.0
    answers = ["yes"] * 2 + ["no"] * 8
    # leaving out a "yes" (2 of 10 subsets): 1 match -> 1/3; leaving out a "no": 2 matches -> 2/3
    assert vqa_official_score(answers, "yes") == pytest.approx((2 / 3 + 8 * 2 / 3) / 10)
    assert vqa_official_score(answers, "no") == 1.0


# ----------------------------------------------------------------------------- span QA


def test_squad_em_f1_by_hand() -> None:
    assert squad_em_f1("the Eiffel Tower", ["Eiffel tower"]) == (1.0, 1.0)
    em, f1 = squad_em_f1("Eiffel Tower in Paris", ["the Eiffel Tower", "Paris, France"])
    assert em == 0.0 and f1 == pytest.approx(2 / 3)  # p = 2/4, r = 2/2 against the first reference
    assert squad_em_f1("", []) == (1.0, 1.0) and squad_em_f1("a tower", []) == (0.0, 0.0)


def test_squad_metric_percentages() -> None:
    metric = SquadMetric()
    metric.update(["the Eiffel Tower", "Eiffel Tower in Paris"], [["Eiffel tower"], ["the Eiffel Tower"]])
    metric.update([""], [[]])
    out = _values(metric.compute())
    assert out == {"em": round(200 / 3, 4), "f1": round((200 + 200 / 3) / 3, 4)}


def test_mlqa_normalisation() -> None:
    assert normalize_answer("La Casa  Blanca", "es") == "casa blanca"
    assert squad_em_f1("la casa blanca", ["casa blanca"], "es")[0] == 1.0
    assert squad_em_f1("la casa blanca", ["casa blanca"]) == (0.0, pytest.approx(0.8))  # SQuAD keeps "la"
    assert squad_em_f1("Die Berliner Mauer", ["Berliner Mauer"], "de")[0] == 1.0
    assert squad_em_f1("«Hola»", ["hola"], "es")[0] == 1.0  # unicode punctuation
    assert squad_em_f1("«Hola»", ["hola"])[0] == 0.0  # not in string.punctuation
    assert normalize_answer("北京大学。", "zh") == "北 京 大 学"
    assert squad_em_f1("北京大学", ["北京"], "zh")[1] == pytest.approx(2 / 3)
    assert normalize_answer("البيت", "ar") == "بيت"
    with pytest.raises(ValueError, match="'th'"):
        SquadMetric(lang="th")


# ----------------------------------------------------------------------------- tagging


def test_iob2_spans_i_without_b_starts_entity() -> None:
    assert iob2_spans(["I-PER", "I-PER", "B-PER", "I-LOC", "O"]) == {("PER", 0, 1), ("PER", 2, 2), ("LOC", 3, 3)}


def test_span_f1_by_hand() -> None:
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    metric = SpanF1(names)
    gold = [[1, 2, 0, 3], [0, 3, 4, 2]]  # PER 0-1, LOC 3 | LOC 1-2, PER 3
    pred = [[1, 2, 0, 4], [0, 3, 0, 2]]  # PER 0-1, LOC 3 (I- without B-) | LOC 1, PER 3
    metric.update(pred, gold)
    assert _values(metric.compute()) == {"span_f1": 75.0, "span_precision": 75.0, "span_recall": 75.0}
    padded = SpanF1(names)
    padded.update(torch.tensor([[1, 2, 0, 4, 0]]), torch.tensor([[1, 2, 0, 3, -100]]))
    assert _values(padded.compute())["span_f1"] == 100.0


# ----------------------------------------------------------------------------- retrieval


def test_recall_at_k_one_caption_per_image() -> None:
    sim = torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.7, 0.2], [0.1, 0.6, 0.5]])
    out = _values(recall_at_k(sim, torch.tensor([0, 1, 2]), ks=(1, 2)))
    assert out == {"ir_r1": round(100 / 3, 4), "tr_r1": 100.0, "ir_r2": 100.0, "tr_r2": 100.0}


def test_recall_at_k_several_captions_per_image() -> None:
    sim = torch.tensor([[0.9, 0.1], [0.2, 0.5], [0.3, 0.4], [0.95, 0.2]])
    out = _values(recall_at_k(sim, torch.tensor([0, 0, 1, 1]), ks=(1, 2)))
    # TR: image 0's best caption (0.9) is beaten by text 3 (0.95); image 1's (0.4) by text 1 (0.5)
    assert out == {"ir_r1": 50.0, "tr_r1": 0.0, "ir_r2": 100.0, "tr_r2": 100.0}


def _retrieval_data() -> tuple[torch.Tensor, list[str], torch.Tensor, list[str]]:
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(5, 8, generator=gen)
    image_ids = [f"img{i}" for i in range(5)]
    text_image = [i % 5 for i in range(13)]
    texts = images[text_image] + 1.5 * torch.randn(13, 8, generator=gen)
    return texts, [image_ids[i] for i in text_image], images, image_ids


def test_retrieval_recall_dedups_images() -> None:
    texts, text_ids, images, image_ids = _retrieval_data()
    expected = recall_at_k(
        F.normalize(texts, dim=1) @ F.normalize(images, dim=1).T, torch.tensor([i % 5 for i in range(13)])
    )
    metric = RetrievalRecall()
    metric.update(texts[:6], text_ids[:6], images, image_ids)
    metric.update(texts[6:], text_ids[6:], images[[4, 0]], [image_ids[4], image_ids[0]])  # seen again
    out = metric.compute()
    assert set(out) == {"ir_r1", "ir_r5", "ir_r10", "tr_r1", "tr_r5", "tr_r10", "mean_r1"}
    for key, value in expected.items():
        assert float(out[key]) == pytest.approx(float(value)), key
    assert float(out["mean_r1"]) == pytest.approx((float(expected["ir_r1"]) + float(expected["tr_r1"])) / 2)
    assert float(out["ir_r5"]) == 100.0  # 5 images in the gallery


# ----------------------------------------------------------------------------- sentence retrieval


def test_tatoeba_accuracy() -> None:
    metric = TatoebaAccuracy()
    src = torch.eye(3)
    tgt = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.1]])  # src 1 -> tgt 2, src 2 -> tgt 1
    metric.update(src[:2], tgt[:2])
    metric.update(src[2:], tgt[2:])
    assert _values(metric.compute()) == {"tatoeba_acc": round(100 / 3, 4)}


def _bucc_data() -> tuple[torch.Tensor, list[str], list[str], list[str | None]]:
    """Per sentence: s0-t0 and s1-t1 are gold pairs, s2 and t2 have no partner."""
    src = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [1, 0, 1, 0]])
    tgt = torch.tensor([[1.0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 2]])
    ids, sides = ["s0", "s1", "s2", "t0", "t1", "t2"], ["src"] * 3 + ["tgt"] * 3
    return F.normalize(torch.cat([src, tgt]), dim=1), ids, sides, ["t0", "t1", None, "s0", "s1", None]


def test_bucc_f1_tiny_case() -> None:
    # k=1 margins: (s0,t0) = (s1,t1) = 1; s2->t0 = .707/((.707+1)/2) = .83 but t0 is taken; then
    # t2->s2 = cos/((.707+cos)/2) with cos(s2,t2) = sqrt(.5 * .2) = .316, i.e. .618: a wrong candidate
    emb, ids, sides, gold = _bucc_data()
    margin_s2_t2 = 0.1**0.5 / ((0.5**0.5 + 0.1**0.5) / 2)
    metric = BuccF1(k=1)
    order = [3, 0, 5]  # batches mix sides; the gold pair s0-t0 is named by both of its sentences
    metric.update(emb[order], [ids[i] for i in order], [sides[i] for i in order], [gold[i] for i in order])
    rest = [1, 2, 4]
    metric.update(emb[rest], [ids[i] for i in rest], [sides[i] for i in rest], [gold[i] for i in rest])
    out = _values(metric.compute())
    assert out["bucc_threshold"] == pytest.approx((1 + margin_s2_t2) / 2, abs=1e-4)
    assert (out["bucc_f1"], out["bucc_precision"], out["bucc_recall"]) == (100.0, 100.0, 100.0)
    fixed = BuccF1(threshold=0.5, k=1)
    fixed.update(emb, ids, sides, gold)
    out = _values(fixed.compute())
    assert (out["bucc_f1"], out["bucc_precision"], out["bucc_recall"]) == (80.0, round(200 / 3, 4), 100.0)
    assert set(BuccF1.names) == set(BuccF1()(emb, ids, sides, gold))  # default k=4 > 3 sentences per side


# ----------------------------------------------------------------------------- factory


@pytest.mark.parametrize("task", sorted(TASKS))
def test_build_metrics_gives_every_catalogue_name(task: str) -> None:
    spec = TASKS[task]
    metric = build_metrics(spec, label_names=("O", "B-X", "I-X"))
    assert set(spec.metrics) <= set(metric.names)


def test_build_metrics_mlm_and_mlqa() -> None:
    mlm = build_metrics(TASKS["mlm"])
    mlm.update(preds=torch.tensor([[3, 4, 5]]), labels=torch.tensor([[3, -100, 6]]))
    assert _values(mlm.compute()) == {"mlm_acc": 50.0}
    mlqa = build_metrics(TASKS["mlqa"], lang="de")
    mlqa.update(predictions=["der Rhein"], references=[["Rhein"]])
    assert _values(mlqa.compute()) == {"em": 100.0, "f1": 100.0}


# ----------------------------------------------------------------------------- DDP (2 ranks, gloo, CPU)


def _ddp_worker(rank: int, port: int) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    local = {"sync_on_compute": False}

    preds, labels = torch.tensor([0, 1, 2, 1, 0]), torch.tensor([0, -1, 2, 2, 0])
    acc, acc_ref = Accuracy(), Accuracy(**local)
    acc_ref.update(preds, labels)
    part = slice(0, 3) if rank == 0 else slice(3, 5)
    acc.update(preds[part], labels[part])

    texts, text_ids, images, image_ids = _retrieval_data()
    ref = RetrievalRecall(**local)
    ref.update(texts, text_ids, images, image_ids)
    split, one_rank = RetrievalRecall(), RetrievalRecall()
    part = slice(0, 7) if rank == 0 else slice(7, 13)
    split.update(texts[part], text_ids[part], images, image_ids)  # every image on both ranks
    if rank == 0:
        one_rank.update(texts, text_ids, images, image_ids)  # rank 1 sees nothing

    bucc_data = _bucc_data()
    bucc, bucc_ref = BuccF1(k=1), BuccF1(k=1, **local)
    bucc_ref.update(*bucc_data)
    if rank == 1:
        bucc.update(*bucc_data)

    for got, want in ((acc, acc_ref), (split, ref), (one_rank, ref), (bucc, bucc_ref)):
        got_v, want_v = _values(got.compute()), _values(want.compute())
        assert got_v == want_v, f"rank {rank} {type(got).__name__}: {got_v} != {want_v}"
    dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_sync_matches_single_process() -> None:
    done = run_process_group(
        [sys.executable, __file__, str(free_port())], TESTS.parent, subprocess_env(), 120, "DDP metric sync"
    )
    assert done.returncode == 0, done.stdout


if __name__ == "__main__":
    torch.multiprocessing.spawn(_ddp_worker, args=(int(sys.argv[1]),), nprocs=2, join=True)
