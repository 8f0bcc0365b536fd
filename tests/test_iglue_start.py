"""The real grid starts every condition from the same place: the shared start phase, run once per seed, comes
before every condition's first run (``study.py --dry-run`` on configs/studies/iglue.yaml), and the zero-shot
"what the start already knows" row is an evaluation-only run from the start itself."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import study

ROOT = Path(__file__).resolve().parents[1]
IGLUE = ROOT / "configs" / "studies" / "iglue.yaml"


def test_dry_run_shows_the_start_before_every_condition() -> None:
    proc = subprocess.run(
        [sys.executable, "study.py", "--config", str(IGLUE), "--dry-run", "--verbose"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    runs = re.findall(r"^\[(\d+)/\d+\] (\S+) \((\w+), [\w ]+\)\n    (.*)$", proc.stdout, flags=re.MULTILINE)
    assert runs, proc.stdout[:2000]
    position = {name: int(i) for i, name, _, _ in runs}
    s = study.load_study(IGLUE)
    assert [name for _, name, _, _ in runs[: len(s.seeds)]] == [f"start/seed{k}" for k in s.seeds]
    for _, name, phase, command in runs:
        if phase == "start":
            assert "--config configs/start/captions.yaml" in command and "--model.init_from" not in command
            continue
        if phase not in ("intermediate", "target"):  # translate-test / few-shot start from a target run
            continue
        condition, seed = name.split("/")[:2]
        parent = re.search(r"--model\.init_from '?([^' ]+)", command).group(1)
        # every condition's first run starts from its seed's start run; later runs from that intermediate run
        first = f"{condition}/{seed}/intermediate" if s.conditions[condition].configs else None
        expected = (
            f"runs/studies/iglue/start/{seed}/<final_ckpt>"
            if phase == "intermediate" or first is None
            else (f"runs/studies/iglue/{first}/<final_ckpt>")
        )
        assert parent == expected, (name, parent)
        assert position[f"start/{seed}"] < position[name]
    assert {name.split("/")[0] for _, name, _, _ in runs} == {"start", *s.conditions}


def test_every_run_uses_the_aligned_two_tower_core() -> None:
    s = study.load_study(IGLUE)
    core = yaml.safe_load((ROOT / s.base[-1]).read_text())["model"]["core"]
    assert core["text_embedding"]["modules"] and core.get("text_drop") is None  # the own heads are kept
    assert s.start is not None and list(s.start.configs) == ["configs/start/captions.yaml"]


def test_the_start_row_is_an_evaluation_only_xflickrco_run() -> None:
    s = study.load_study(IGLUE)
    target = s.targets["xflickrco_start"]
    assert target.task == "xflickrco" and not target.train_tasks
    tasks = yaml.safe_load((ROOT / target.configs[0]).read_text())["data"]["tasks"]
    assert tasks == [{"name": "xflickrco", "shards": "data/xflickrco", "test_split": "test"}]  # nothing trains
    none_run = next(r for r in study.plan(s, only=["none"]) if r.target == "xflickrco_start")
    assert none_run.parent is not None and none_run.parent.phase == "start"  # the `none` row scores the start


def test_study_md_states_the_start_every_condition_had(tmp_path: Path) -> None:
    data = yaml.safe_load(IGLUE.read_text())
    paths = study.write_report(study.parse_study({**data, "out": str(tmp_path / "iglue")}))
    text = paths["md"].read_text()
    said = (
        "Start of every condition (the same per seed): `configs/base.yaml`, "
        "`configs/models/siglip_multilingual.yaml`, then the start phase `configs/start/captions.yaml`"
    )
    assert said in text
    assert json.loads(paths["json"].read_text())["start"]["start"] == ["configs/start/captions.yaml"]
    without = study.write_report(study.parse_study({**data, "start": None, "out": str(tmp_path / "plain")}))
    assert "no shared start phase" in without["md"].read_text()


@pytest.mark.slow
def test_start_phase_then_its_zero_shot_row_end_to_end(tmp_path: Path, demo_dir: Path) -> None:
    """The real configs on tiny data: configs/start/captions.yaml trains a two-tower core on an img2dataset index,
    then configs/target/xflickrco_zeroshot.yaml scores xFlickr&CO from its final weights without training."""
    from conftest import jpeg_bytes
    from test_img2dataset import write_img2dataset
    from test_two_tower import SIGLIP_EMBEDDING, _tiny_siglip_with_tokenizer

    import train
    from shards.converters import CONVERTERS
    from shards.writer import build_shards

    text_model, vision_model = _tiny_siglip_with_tokenizer(tmp_path, demo_dir / "text_model")
    data = tmp_path / "data"
    records = [
        {
            "key": f"x-{lang}-{i}",
            "split": "test",
            "lang": lang,
            "images": {"jpg": jpeg_bytes(i)},
            "json": {
                "task": "xflickrco",
                "lang": lang,
                "id": str(1000 + i),
                "texts": [f"a red circle {i}"],
                "image_id": str(1000 + i),
            },
        }
        for lang in ("en", "de")
        for i in range(5)
    ]
    build_shards(data / "xflickrco", records, dataset="xflickrco", tasks={"xflickrco": {}}, progress=False)
    coco = [
        {
            "shard": "00000",
            "key": f"{i:09d}",
            "caption": f"a blue square {i}",
            "url": f"https://e.org/{i}.jpg",
            "extra": {},
        }
        for i in range(12)
    ]
    write_img2dataset(tmp_path / "coco", coco)
    CONVERTERS["img2dataset"](src=tmp_path / "coco", out=data / "start_captions", exclude=[str(data / "xflickrco")])
    overrides = tmp_path / "tiny.yaml"
    csv = {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}  # no W&B
    overrides.write_text(
        yaml.safe_dump(
            {
                "trainer": {"logger": [csv], "enable_model_summary": False, "max_steps": 2, "precision": "32-true"},
                "model": {
                    "core": {
                        "text_model": text_model,
                        "vision_model": vision_model,
                        "pretrained": False,
                        "text_kwargs": {},
                        "text_tower": "text_model",
                        "text_embedding": SIGLIP_EMBEDDING,
                        "fusion": "fusion_transformer",
                    }
                },
                "data": {
                    "num_workers": 0,
                    "batch_size": 4,
                    "eval_batch_size": 4,
                    "steps_per_epoch": 2,
                    "shuffle_buffer": 4,
                    "max_length": 64,
                },
            }
        )
    )

    def fit(config: str, root: str, *extra: str) -> None:
        args = [
            "fit",
            "--config",
            str(ROOT / "configs/base.yaml"),
            "--config",
            str(ROOT / config),
            "--config",
            str(overrides),
            "--trainer.default_root_dir",
            root,
            *extra,
        ]
        train.cli_main(args=args)

    old, argv = os.getcwd(), sys.argv
    os.chdir(tmp_path)
    sys.argv = ["train.py"]
    try:
        fit("configs/start/captions.yaml", "runs/start", "--phase", "start")
        start = json.loads((tmp_path / "runs/start/finished.json").read_text())["last_ckpt"]
        fit(
            "configs/target/xflickrco_zeroshot.yaml",
            "runs/zero",
            "--phase",
            "target",
            "--model.init_from",
            start,
            "--test_after_fit",
            "true",
        )
    finally:
        os.chdir(old)
        sys.argv = argv
    results = json.loads((tmp_path / "runs/zero/results.json").read_text())
    rows = results["rows"] if isinstance(results, dict) else results
    scored = {(r["lang"], r["metric"]) for r in rows if r["task"] == "xflickrco"}
    assert {("en", "mean_r1"), ("de", "mean_r1")} <= scored, scored
    assert json.loads((tmp_path / "runs/zero/test_counts.json").read_text()) == {"xflickrco/en": 5, "xflickrco/de": 5}
