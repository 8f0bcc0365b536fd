"""Picture-free reference rules for the demo's visual tasks: what reading the text alone can score.

A rule is fitted on the English train items (the answer most often given to each exact sentence; the
overall most frequent answer for a sentence never seen) and scored on the English test items, with the
task's own metric: accuracy for ``demo_ve``, VQA accuracy (soft scores) for ``demo_vqa``. A model that
beats these by a wide margin must be reading the pictures.

    python -m shards.demo.rules            # full world, seed 0: prints both rules
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from typing import Literal

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


if __name__ == "__main__":
    for name in RULE_TASKS:
        print(f"{name}: picture-free rule {reference_rule(name):.1f}% (English test, full world, seed 0)")
