"""Random scenes of one to three coloured shapes and their pictures (64 x 64 px JPEG)."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from shards.demo.lexicon import COLOURS, SHAPES, SIZES, SLOTS, Obj

# Square pictures drawn for the tiny ViT (64 px input, 16 px patches, after timm's eval transform: resize to
# 71 px, centre crop 64). Each shape is drawn so that after that transform it lies inside ONE patch (columns 0,
# 1 and 3 of row 1): a linear patch embedding then sees a whole shape, its colour and, by the patch's
# position, its slot. With shapes straddling patch borders (the first version) the 150-step model could not
# read the pictures: English demo_ve stayed within a few points of the picture-free rule.
SIDE = 64
RGB = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SLOT_X = {"left": 10, "middle": 25, "right": 54}  # -> about 8, 24 and 56 px after resize + crop: patch centres
ROW_Y = 25  # -> about 24 px: the centre of patch row 1
JITTER = 1  # +- px of vertical jitter, small enough to stay inside the patch
RADIUS = {"big": 7, "small": 4}  # -> at most 8 px after the resize: within half a patch
NOISE = 6  # +- grey levels of pixel noise, so no two pictures of one scene are identical


@dataclass(frozen=True)
class Scene:
    """Shapes listed left to right (each shape kind at most once, so 'the circle' is unambiguous)."""

    objects: tuple[Obj, ...]
    background: int
    noise_seed: int

    @property
    def shapes(self) -> set[str]:
        return {o.shape for o in self.objects}

    def get(self, shape: str) -> Obj | None:
        return next((o for o in self.objects if o.shape == shape), None)


def random_scene(rng: random.Random) -> Scene:
    n = rng.choice((1, 2, 3))
    shapes = rng.sample(SHAPES, n)
    slots = sorted(rng.sample(SLOTS, n), key=SLOTS.index)
    objects = tuple(Obj(s, rng.choice(COLOURS), slot, rng.choice(SIZES)) for s, slot in zip(shapes, slots))
    return Scene(objects, background=rng.randint(228, 250), noise_seed=rng.getrandbits(32))


def draw_scene(scene: Scene) -> bytes:
    """The scene as JPEG bytes (quality 90, like the writer's re-encoding, so the writer passes them through)."""
    noise_rng = np.random.default_rng(scene.noise_seed)
    img = Image.new("RGB", (SIDE, SIDE), (scene.background,) * 3)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        x = SLOT_X[obj.slot]
        y = ROW_Y + int(noise_rng.integers(-JITTER, JITTER + 1))
        r = RADIUS[obj.size]
        box = (x - r, y - r, x + r, y + r)
        if obj.shape == "circle":
            draw.ellipse(box, fill=RGB[obj.colour])
        elif obj.shape == "square":
            draw.rectangle(box, fill=RGB[obj.colour])
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=RGB[obj.colour])
    pixels = np.asarray(img, dtype=np.int16) + noise_rng.integers(-NOISE, NOISE + 1, (SIDE, SIDE, 3))
    out = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(out, format="JPEG", quality=90)
    return out.getvalue()
