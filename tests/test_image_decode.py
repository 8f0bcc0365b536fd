"""Image decoding and the image transforms of the pipeline: libjpeg-turbo with DCT scaling, PIL for the rest,
timm's eval geometry kept exactly, deterministic evaluation pixels, and the training augmentation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import timm.data
import torch
from PIL import Image

from benchmarks.common import make_photos
from datamodules import pipeline
from datamodules.pipeline import (
    DataError,
    EvalImageTransform,
    SafeDecoder,
    TrainImageTransform,
    decode_rgb,
    image_size,
)
from lightning_modules.core import vision_data_config

VIT = vision_data_config("vit_base_patch16_224", {})  # 224 px, bicubic, crop_pct 0.9: resize to 248


def _encode(img: Image.Image, fmt: str = "JPEG", **kwargs: object) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """Natural photos 500x375..640x480 (some portrait), as the shard writer stores them (JPEG q90)."""
    return [p.read_bytes() for p in make_photos(tmp_path_factory.mktemp("photos"), 5)]


def _timm_eval(data: bytes, config: dict) -> torch.Tensor:
    """timm's eval transform on the full PIL decode, back in 0..255 units."""
    ref = timm.data.create_transform(**config, is_training=False)
    mean, std = torch.tensor(config["mean"]).view(3, 1, 1), torch.tensor(config["std"]).view(3, 1, 1)
    return (ref(Image.open(io.BytesIO(data)).convert("RGB")) * std + mean) * 255


# -- decoding -----------------------------------------------------------------------------------------------
def test_jpeg_decodes_like_pil_at_full_size(photos: list[bytes]) -> None:
    for data in photos:
        array = decode_rgb(data)
        reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert array.shape == reference.shape and array.dtype == np.uint8
        assert np.abs(array.astype(int) - reference).max() <= 2  # both libjpeg-turbo; upsampling may round apart


@pytest.mark.parametrize(
    ("size", "scale", "decoded"),
    [
        ((1024, 768), 248 / 768, (512, 384)),  # 1/2 covers 248
        ((1024, 768), 0.2, (256, 192)),  # 1/4: smallest half >= 0.2
        ((512, 384), 248 / 384, (512, 384)),  # 1/2 would undershoot
        ((800, 600), 1.0, (800, 600)),
    ],
)
def test_dct_scaling_picks_the_smallest_half_that_covers(size: tuple, scale: float, decoded: tuple) -> None:
    data = _encode(Image.radial_gradient("L").convert("RGB").resize(size))
    assert decode_rgb(data, scale).shape == (decoded[1], decoded[0], 3)
    assert image_size(data) == size


def test_eighths_scaling_is_available_and_covers_the_target() -> None:
    data = _encode(Image.radial_gradient("L").convert("RGB").resize((512, 384)))
    array = decode_rgb(data, 248 / 384, scaling="eighths")
    assert array.shape == (288, 384, 3)  # 6/8: the smallest eighth with a short side >= 248


@pytest.mark.parametrize("mode", ["PNG", "gray JPEG", "CMYK JPEG"])
def test_non_rgb_or_non_jpeg_bytes_fall_back_to_pil(mode: str) -> None:
    img = Image.radial_gradient("L").resize((96, 72))
    data = {
        "PNG": lambda: _encode(img.convert("RGB"), "PNG"),
        "gray JPEG": lambda: _encode(img),
        "CMYK JPEG": lambda: _encode(img.convert("CMYK")),
    }[mode]()
    array = decode_rgb(data)
    assert array.shape == (72, 96, 3) and array.dtype == np.uint8
    assert image_size(data) == (96, 72)
    reference = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.abs(array.astype(int) - reference).max() <= 2


def test_corrupt_image_is_a_bad_image_error_naming_shard_and_key(photos: list[bytes]) -> None:
    decoder = SafeDecoder(
        EvalImageTransform(VIT), draft_size=248, required=("text", "label"), num_images=1, num_labels=3, strict=True
    )
    raw = {"__key__": "k1", "__url__": "s.tar", "json": b'{"text": "a", "label": 0}'}
    for bad in (photos[0][: len(photos[0]) // 2], b"not an image at all"):
        with pytest.raises(DataError, match=r"shard s\.tar, key 'k1': jpg is not a readable image") as err:
            decoder.decode({**raw, "jpg": bad})
        assert err.value.reason == "bad_image"


# -- evaluation: timm's geometry, deterministic ------------------------------------------------------------
@pytest.mark.parametrize("name", ["vit_base_patch16_224", "resnet50", "vit_base_patch16_siglip_256"])
def test_eval_from_bytes_matches_timm(name: str, photos: list[bytes]) -> None:
    """Resize the short side to input / crop_pct, centre crop, uint8 out: timm's eval transform within 2 grey
    levels (torch's antialiased resize, not PIL's) on what was decoded. A large image is DCT-scaled by 1/2
    first (as PIL's draft mode did before): against timm on the *full* decode that costs a few levels at
    edges, 0.3 on average."""
    config = vision_data_config(name, {})
    fast = EvalImageTransform(config)
    small = _encode(Image.open(io.BytesIO(photos[0])).resize((200, 150)))  # upsampled to the scale size
    for data in [*photos, small]:
        pixels = fast.from_bytes(data)
        assert pixels.dtype == torch.uint8 and pixels.shape == (3, *config["input_size"][-2:])
        diff = (pixels.float() - _timm_eval(data, config)).abs()
        assert diff.max() <= 2 and diff.mean() <= 0.05, (name, diff.max(), diff.mean())
    big = _encode(Image.open(io.BytesIO(photos[1])).resize((1200, 900)), quality=90)
    half = Image.open(io.BytesIO(big))
    half.draft("RGB", (600, 450))
    assert half.size == (600, 450)
    diff = (fast.from_bytes(big).float() - _timm_eval(_encode(half, "PNG"), config)).abs()
    assert diff.max() <= 2 and diff.mean() <= 0.05, (name, diff.max(), diff.mean())
    assert (fast.from_bytes(big).float() - _timm_eval(big, config)).abs().mean() <= 0.5


def test_eval_pixels_are_deterministic_in_and_across_processes(photos: list[bytes]) -> None:
    fast = EvalImageTransform(VIT)
    here = torch.stack([fast.from_bytes(d) for d in photos])
    assert torch.equal(here, torch.stack([fast.from_bytes(d) for d in photos]))
    loader = torch.utils.data.DataLoader(
        photos, batch_size=len(photos), num_workers=1, collate_fn=lambda b: torch.stack([fast.from_bytes(d) for d in b])
    )
    assert torch.equal(here, next(iter(loader)))


# -- training augmentation ---------------------------------------------------------------------------------
def test_crop_boxes_follow_random_resized_crop_bounds() -> None:
    train = TrainImageTransform(VIT)
    for width, height in [(640, 480), (375, 500), (1000, 100)]:
        for _ in range(200):
            left, top, w, h = train.crop_box(width, height)
            assert 0 <= left and 0 <= top and left + w <= width and top + h <= height and w > 0 and h > 0
            if (width, height) != (1000, 100):  # the 10:1 image falls back to a clamped centre crop at times
                assert 0.08 * width * height * 0.9 <= w * h <= width * height


def test_full_box_and_flip_give_the_resized_image_mirrored(photos: list[bytes]) -> None:
    """scale 1 and the image's own aspect: the crop is the whole image; hflip=1 mirrors it exactly."""
    data = photos[0]
    width, height = image_size(data)
    plain = TrainImageTransform(VIT, scale=(1.0, 1.0), ratio=(width / height,) * 2, hflip=0.0)
    mirrored = TrainImageTransform(VIT, scale=(1.0, 1.0), ratio=(width / height,) * 2, hflip=1.0)
    assert plain.crop_box(width, height) == (0, 0, width, height)
    a, b = plain.from_bytes(data), mirrored.from_bytes(data)
    assert a.shape == (3, 224, 224) and a.dtype == torch.uint8
    assert torch.equal(a.flip(-1), b)
    full = torch.from_numpy(np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((224, 224), Image.BICUBIC)))
    assert (a.permute(1, 2, 0).float() - full.float()).abs().mean() <= 0.5  # PIL's resize of the whole image


def test_augmentation_is_random_but_reproducible_from_the_torch_seed(photos: list[bytes]) -> None:
    torch.manual_seed(7)
    first = [TrainImageTransform(VIT).from_bytes(photos[0]) for _ in range(2)]
    torch.manual_seed(7)
    again = [TrainImageTransform(VIT).from_bytes(photos[0]) for _ in range(2)]
    train = TrainImageTransform(VIT)
    draws = [train.from_bytes(photos[0]) for _ in range(4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert len({d.sum().item() for d in draws}) > 1  # not the same crop every time


def test_augmentation_decodes_at_the_crop_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole 1200x900 image as the crop needs only 224 px on its short side: 1/4 (300x225) covers it."""
    shapes = []
    real = pipeline.decode_rgb

    def spy(data: bytes, scale: float = 1.0, **kwargs: object) -> np.ndarray:
        shapes.append(real(data, scale, **kwargs).shape)
        return real(data, scale, **kwargs)

    monkeypatch.setattr(pipeline, "decode_rgb", spy)
    data = _encode(Image.radial_gradient("L").convert("RGB").resize((1200, 900)))
    TrainImageTransform(VIT, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3)).from_bytes(data)
    TrainImageTransform(VIT, scale=(0.08, 0.08), ratio=(1.0, 1.0)).from_bytes(data)
    assert shapes == [(225, 300, 3), (900, 1200, 3)]  # a 8%-area crop (~294 px) needs the full decode


def test_augment_is_a_per_task_option(tmp_path: Path, tiny_model: dict[str, str]) -> None:
    from conftest import vision_config, write_task_shards

    from datamodules.datamodule import TaskData, TransferDataModule

    write_task_shards(tmp_path, "demo_ve", {("train", "en"): 4, ("dev", "en"): 2}, max_per_shard=4)
    for augment, kind in ((True, TrainImageTransform), (False, EvalImageTransform)):
        task = TaskData("demo_ve", shards=str(tmp_path), train_split="train", val_split="dev", augment=augment)
        dm = TransferDataModule(
            [task],
            tokenizer=tiny_model["text_model"],
            image_config=vision_config(tiny_model["vision_model"]),
            batch_size=2,
            num_workers=0,
            steps_per_epoch=1,
        )
        assert type(dm._decoder("demo_ve", strict=False).transform) is kind
        assert type(dm._decoder("demo_ve", strict=True).transform) is EvalImageTransform  # evaluation never augments
        batch = next(iter(dm.train_dataloader()))
        assert batch["pixel_values"].dtype == torch.uint8 and batch["pixel_values"].shape[0] == 2
