"""Picture-free reference rules for the demo's visual tasks: what reading the text alone can score.

A rule is fitted on the English train items (the answer most often given to each exact sentence; the
overall most frequent answer for a sentence never seen) and scored on the English test items, with the
task's own metric: accuracy for ``demo_ve``, VQA accuracy (soft scores) for ``demo_vqa``. A model that
beats these by a wide margin must be reading the pictures.

    python -m shards.demo.rules            # full world, seed 0: prints both rules
    python -m shards.demo.rules --outcomes runs/studies/demo/none/seed0/demo_vqa/outcomes.jsonl
                                           # a run's English test score per kind of item (what it reads)
"""

from __future__ import annotations

import argparse
import random
from collections import Counter, defaultdict
from pathlib import Path
from typing import Literal

from contracts.catalogue import NLI_LABELS
from contracts.outcomes import read_outcomes
from shards.demo import SIZES
from shards.demo.tasks import DEMO_TASKS

RULE_TASKS = ("demo_ve", "demo_vqa")


def _items(task: str, split: str, size: Literal["small", "full"], seed: int) -> list[tuple[str, dict[int, float]]]:
    """(English text, {answer index: score}) per item, drawn exactly as ``demo_records`` draws them."""
    spec = DEMO_TASKS[task]
    items = spec.make_items(random.Random(f"{seed}/{task}/{split}"), SIZES[size][0][split], split)
    out = []
    for item in items:
        fields, _ = spec.render(item, "en")
        scores = {fields["label"]: 1.0} if "label" in fields else dict(zip(fields["labels"], fields["scores"]))
        out.append((fields["text"], scores))
    return out


def reference_rule(task: str, size: Literal["small", "full"] = "full", seed: int = 0) -> float:
    """Test score (%) of the best per-sentence answer learnt from the train text alone."""
    if task not in RULE_TASKS:
        raise ValueError(f"No reference rule for {task!r}; rules exist for {list(RULE_TASKS)}")
    totals: dict[str, Counter] = defaultdict(Counter)
    overall: Counter = Counter()
    for text, scores in _items(task, "train", size, seed):
        totals[text].update(scores)
        overall.update(scores)
    default = overall.most_common(1)[0][0]
    test = _items(task, "test", size, seed)
    hits = 0.0
    for text, scores in test:
        guess = totals[text].most_common(1)[0][0] if totals.get(text) else default
        hits += scores.get(guess, 0.0)
    return 100.0 * hits / len(test)


def item_kind(task: str, item: dict) -> str:
    """demo_vqa: the question's frame (q_count, q_exists, q_colour, q_which); demo_ve: the claim's frame and label."""
    if task == "demo_vqa":
        return item["question"][0]
    return f"{item['hyp'][0]}/{NLI_LABELS[item['label']]}"


def scores_by_kind(outcomes: str | Path, size: Literal["small", "full"] = "full", seed: int = 0) -> dict[str, tuple]:
    """A run's English test score (%) per kind of item, from its ``outcomes.jsonl``: {kind: (score, items)}.
    The items are re-drawn as ``demo_records`` drew them (same size and seed as the world the run was tested on)."""
    sets = read_outcomes(outcomes)
    task = next((task for task, lang in sets if lang == "en" and task in RULE_TASKS and sets[task, lang]["rows"]), None)
    if task is None:
        raise ValueError(f"{outcomes}: no English demo_ve or demo_vqa test outcomes")
    rows = sets[task, "en"]["rows"].values()
    items = DEMO_TASKS[task].make_items(random.Random(f"{seed}/{task}/test"), SIZES[size][0]["test"], "test")
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for row in rows:
        index = int(row["key"].rsplit("-", 1)[1])  # demo_records' keys: test-en-<index>
        if index >= len(items):
            raise ValueError(
                f"{outcomes}: item {row['key']} is not in the {size} demo world: pass the --size and "
                "--seed of the world the run was tested on"
            )
        kind = item_kind(task, items[index])
        sums[kind][0] += row.get("score", row.get("correct", 0.0))
        sums[kind][1] += row["total"]
    return {kind: (100.0 * got / n, int(n)) for kind, (got, n) in sorted(sums.items())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shards.demo.rules", description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", nargs="*", default=[], help="outcomes.jsonl of demo_ve / demo_vqa test runs")
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seed", type=int, default=0, help="the demo world's seed")
    args = parser.parse_args(argv)
    if not args.outcomes:
        for name in RULE_TASKS:
            print(
                f"{name}: picture-free rule {reference_rule(name, args.size, args.seed):.1f}% "
                f"(English test, {args.size} world, seed {args.seed})"
            )
    for path in args.outcomes:
        kinds = scores_by_kind(path, args.size, args.seed)
        print(f"{path}: " + ", ".join(f"{kind} {score:.1f} ({n})" for kind, (score, n) in kinds.items()))


if __name__ == "__main__":
    main()
