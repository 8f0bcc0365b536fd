"""Random scenes of one to three coloured shapes and their pictures (64 x 64 px JPEG)."""

from __future__ import annotations

import io
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from shards.demo.lexicon import COLOURS, SHAPES, SIZES, SLOTS, Obj

# Square pictures: any resize or centre crop to the vision tower's 64 px keeps all three slots visible.
SIDE = 64
RGB = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
SLOT_X = {"left": 11, "middle": 32, "right": 53}
RADIUS = {"big": 10, "small": 6}
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
        y = SIDE // 2 + int(noise_rng.integers(-10, 11))
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
