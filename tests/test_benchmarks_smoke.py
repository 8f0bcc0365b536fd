"""Every benchmark's code runs in its quick mode and prints its table. No timing is asserted: figures on
shared machines are noise; they are read from ``make bench`` output, never checked in tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import gpu, run_all
from benchmarks.common import make_photos
from datamodules.pipeline import EvalImageTransform


def test_run_all_quick_prints_every_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results.json"
    # startup starts train.py processes and demo runs (minutes): its code is checked below on small commands
    results = run_all.main(["--quick", "--only", "loader", "memory", "step", "gpu", "--out", str(out)])
    printed = capsys.readouterr().out
    for title in ("Loader: batch 32", "Memory:", "Step:", "GPU"):
        assert title in printed, printed
    assert "recipe (c)" in printed and "per CPU-s: / (c)" in printed and "with augmentation" in printed
    rows = results["loader"]["rows"]
    assert [r["workers"] for r in rows] == [0, 1, 2] and results["step"]["ratio_wall"] > 0
    assert all(r["recipe_per_cpu_s"] > 0 and r["vs_recipe_cpu"] > 0 and r["vs_naive_cpu"] > 0 for r in rows)
    assert set(results["loader"]["image_ops"]) == {"pil_limit", "eval_work", "eval_work_eighths", "train_work"}
    assert len(results["memory"]["rows"]) == 3
    assert json.loads(out.read_text())["machine"]["cpus"] >= 1


@pytest.mark.slow
def test_gpu_run_dry_run_rehearses_the_whole_plan_on_cpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``make bench-gpu``'s plan, tiny and on the CPU: every config ± compile, the 2-process DDP step (gloo)
    with equal weights on both ranks, loader scaling at 1/2/4/8 workers, one JSON."""
    out = tmp_path / "gpu_run.json"
    run_all.main(["--only", "gpu", "loader", "--gpu-run", "--dry-run", "--out", str(out)])
    results = json.loads(out.read_text())
    assert results["gpu_run"] and results["dry_run"]
    rows = results["gpu"]["rows"]
    assert [(r["config"], r["compile"]) for r in rows] == [
        ("base", False),
        ("base", True),
        ("large", False),
        ("large", True),
    ]
    assert all(r["samples_s"] > 0 and r["flops_per_step"] > 0 for r in rows)
    ddp = results["gpu"]["ddp"]
    assert ddp["backend"] == "gloo" and ddp["world_size"] == 2 and ddp["weights_equal"], ddp
    assert [r["workers"] for r in results["loader"]["rows"]] == [1, 2, 4, 8]
    assert "DDP step, 2 processes on one device" in capsys.readouterr().out


def test_gpu_run_flags_are_checked() -> None:
    with pytest.raises(SystemExit):
        run_all.main(["--dry-run"])  # rehearses --gpu-run only
    with pytest.raises(SystemExit):
        run_all.main(["--gpu-run", "--only", "step"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="add --dry-run"):
            gpu.gpu_run()


def test_photos_are_natural_sized_jpegs(tmp_path: Path) -> None:
    from PIL import Image

    for path in make_photos(tmp_path, 6):
        with Image.open(path) as img:
            assert img.format == "JPEG" and 333 <= min(img.size) <= 480 and 500 <= max(img.size) <= 640, img.size


def test_gpu_measure_runs_on_cpu(tmp_path: Path) -> None:
    """The GPU benchmark's code path (real-config reading, FLOP counting, Trainer steps) on tiny shapes."""
    text_model, vision_model = gpu.real_config("large")
    assert (text_model, vision_model.split(".")[0]) == ("xlm-roberta-large", "vit_base_patch16_224")
    text = gpu.write_text_config(
        tmp_path, text_model, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64
    )
    vision = tmp_path / "vision.json"
    tiny = {"img_size": 32, "embed_dim": 32, "depth": 1, "num_heads": 2}
    vision.write_text(json.dumps({"model_name": "vit_tiny_patch16_224", "kwargs": tiny}))
    fig = gpu.measure(
        text, str(vision), tmp_path, compile=False, accelerator="cpu", batch=2, tokens=8, image=32, warmup=1, timed=1
    )
    assert fig["flops_per_step"] > 0 and fig["samples_s"] > 0
    assert gpu.peak_tflops("NVIDIA H100 80GB HBM3") == gpu.peak_tflops("NVIDIA H200") == 989.0


@pytest.mark.parametrize("name", ["vit_base_patch16_224", "resnet50", "vit_base_patch16_siglip_256"])
def test_fast_eval_transform_matches_timm(name: str, tmp_path: Path) -> None:
    """The pipeline's crop-box resize + the core's normalisation give timm's eval transform output up to
    rounding at a few pixels."""
    import timm.data
    from PIL import Image

    from lightning_modules.core import vision_data_config

    config = vision_data_config(name, {})
    assert EvalImageTransform.supports(config)
    fast, ref = EvalImageTransform(config), timm.data.create_transform(**config, is_training=False)
    images = [Image.open(p).convert("RGB") for p in make_photos(tmp_path, 4)] + [Image.new("RGB", (300, 500), "red")]
    level = 1 / 255 / min(config["std"])  # one grey level in normalised units
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    for img in images:
        pixels = fast(img)
        assert pixels.dtype == torch.uint8
        a, b = ref(img), (pixels.float() / 255 - mean) / std  # as EncoderCore.image_tokens normalises
        assert a.shape == b.shape == (3, *config["input_size"][-2:])
        diff = (a - b).abs()
        assert diff.max() <= 4 * level and diff.mean() <= 0.05 * level, (diff.max(), diff.mean())


# -- the performance means are in place -------------------------------------------------------------------------


def _jpeg(size: tuple[int, int]) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.radial_gradient("L").convert("RGB").resize(size).save(out, format="JPEG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("size", "target", "decoded"),
    [((1024, 768), 248, (512, 384)), ((512, 384), 248, (512, 384)), ((384, 288), 71, (96, 72))],
)
def test_draft_decode_scales_down_to_the_resize_short_side_never_below(
    size: tuple, target: int, decoded: tuple
) -> None:
    from datamodules.pipeline import decode_image

    assert decode_image(_jpeg(size), target).size == decoded


def test_loaders_pin_persist_and_pad_to_multiples_of_8(tmp_path: Path, tiny_model: dict[str, str]) -> None:
    from conftest import vision_config, write_task_shards

    from datamodules.datamodule import TaskData, TransferDataModule

    write_task_shards(tmp_path, "demo_ve", {("train", "en"): 8}, max_per_shard=4)
    dm = TransferDataModule(
        [TaskData("demo_ve", shards=str(tmp_path), train_split="train")],
        tokenizer=tiny_model["text_model"],
        image_config=vision_config(tiny_model["vision_model"]),
        batch_size=3,
        num_workers=1,
        steps_per_epoch=1,
    )
    loader = dm.train_dataloader().loaders["demo_ve"]
    assert loader.pin_memory and loader.persistent_workers
    assert dm._decoder("demo_ve", strict=False).draft_size == 71  # demo ViT: 64 px / crop_pct 0.9
    batch = next(iter(dm._loader(loader.dataset, 0, persistent=False)))
    assert batch["input_ids"].shape[1] % 8 == 0


def test_startup_times_commands_side_by_side() -> None:
    import sys

    from benchmarks import startup

    got = startup._pair(
        {
            "a": ([sys.executable, "-c", "pass"], startup._env()),
            "b": ([sys.executable, "-c", "import json"], startup._env()),
        },
        repeats=2,
    )
    assert set(got) == {"a", "b"} and all(v["wall_s"] > 0 and v["cpu_s"] >= 0 for v in got.values())
    assert "startup" in run_all.BENCHMARKS
