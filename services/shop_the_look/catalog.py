"""The demo catalog: product photos rendered deterministically, with known labels.

Nothing is downloaded: every product is drawn with Pillow from its (category, colour,
pattern) and a seed, which moves, scales, tilts and shades it on a tinted background. The same
labels with another seed give a new rendering of the same kind of product: that is how the
held-out queries of ``benchmarks/shop_bench.py`` are made (never indexed).
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFilter

SIZE = 256

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 30, 40),
    "orange": (240, 130, 20),
    "yellow": (240, 210, 40),
    "green": (40, 150, 60),
    "blue": (40, 80, 200),
    "purple": (120, 50, 160),
    "pink": (240, 120, 170),
    "black": (30, 30, 35),
}
PATTERNS = ("plain", "striped", "dotted", "checked")

Points = list[tuple[float, float]]


def _tshirt() -> list[Points]:
    return [
        [
            (0.30, 0.18), (0.42, 0.14), (0.50, 0.19), (0.58, 0.14), (0.70, 0.18),
            (0.90, 0.36), (0.80, 0.45), (0.71, 0.38), (0.71, 0.86), (0.29, 0.86),
            (0.29, 0.38), (0.20, 0.45), (0.10, 0.36),
        ]
    ]  # fmt: skip


def _jacket() -> list[Points]:
    return [
        [
            (0.30, 0.14), (0.42, 0.12), (0.50, 0.22), (0.58, 0.12), (0.70, 0.14),
            (0.84, 0.30), (0.92, 0.86), (0.80, 0.88), (0.74, 0.45), (0.73, 0.90),
            (0.27, 0.90), (0.26, 0.45), (0.20, 0.88), (0.08, 0.86), (0.16, 0.30),
        ]
    ]  # fmt: skip


def _dress() -> list[Points]:
    return [
        [
            (0.40, 0.08), (0.44, 0.08), (0.46, 0.22), (0.54, 0.22), (0.56, 0.08),
            (0.60, 0.08), (0.62, 0.30), (0.58, 0.42), (0.80, 0.92), (0.20, 0.92),
            (0.42, 0.42), (0.38, 0.30),
        ]
    ]  # fmt: skip


def _trousers() -> list[Points]:
    return [
        [
            (0.30, 0.08), (0.70, 0.08), (0.74, 0.92), (0.56, 0.92), (0.50, 0.34),
            (0.44, 0.92), (0.26, 0.92),
        ]
    ]  # fmt: skip


def _skirt() -> list[Points]:
    return [[(0.36, 0.22), (0.64, 0.22), (0.66, 0.30), (0.84, 0.78), (0.16, 0.78), (0.34, 0.30)]]


def _shoes() -> list[Points]:
    return [
        [
            (0.12, 0.52), (0.16, 0.40), (0.40, 0.38), (0.48, 0.46), (0.62, 0.52),
            (0.84, 0.56), (0.90, 0.64), (0.90, 0.72), (0.12, 0.72),
        ]
    ]  # fmt: skip


def _bag() -> list[Points]:
    handle = [
        (0.5 + 0.20 * math.cos(a), 0.40 - 0.22 * math.sin(a))
        for a in [i * math.pi / 16 for i in range(17)]
    ]
    inner = [(0.5 + 0.14 * math.cos(a), 0.40 - 0.16 * math.sin(a)) for a, _ in zip(
        [i * math.pi / 16 for i in range(16, -1, -1)], range(17), strict=True
    )]  # fmt: skip
    return [[(0.20, 0.40), (0.80, 0.40), (0.86, 0.86), (0.14, 0.86)], handle + inner]


def _hat() -> list[Points]:
    crown = [
        (0.5 + 0.26 * math.cos(a), 0.58 - 0.34 * math.sin(a))
        for a in [i * math.pi / 24 for i in range(25)]
    ]
    return [crown, [(0.10, 0.58), (0.90, 0.58), (0.86, 0.66), (0.14, 0.66)]]


SHAPES: dict[str, Callable[[], list[Points]]] = {
    "t-shirt": _tshirt,
    "jacket": _jacket,
    "dress": _dress,
    "trousers": _trousers,
    "skirt": _skirt,
    "shoes": _shoes,
    "bag": _bag,
    "hat": _hat,
}
CATEGORIES = tuple(SHAPES)

_WORDS = {
    "t-shirt": ("cotton crew-neck t-shirt", "short-sleeved t-shirt", "casual t-shirt"),
    "jacket": ("light zip jacket", "long-sleeved jacket", "city jacket"),
    "dress": ("summer dress", "sleeveless dress", "flared dress"),
    "trousers": ("straight-leg trousers", "chino trousers", "wide trousers"),
    "skirt": ("A-line skirt", "knee-length skirt", "flared skirt"),
    "shoes": ("low-top sneakers", "canvas shoes", "everyday sneakers"),
    "bag": ("tote bag", "handbag with a top handle", "shoulder bag"),
    "hat": ("bucket hat", "wide-brim hat", "sun hat"),
}
_PATTERN_WORDS = {
    "plain": "plain",
    "striped": "striped",
    "dotted": "polka-dot",
    "checked": "checked",
}


@dataclass(frozen=True)
class Product:
    """One catalog item: labels, description and the seed of its rendering."""

    id: str
    category: str
    colour: str
    pattern: str
    seed: int

    @property
    def description(self) -> str:
        words = _WORDS[self.category][self.seed % len(_WORDS[self.category])]
        return f"{_PATTERN_WORDS[self.pattern]} {self.colour} {words}"

    @property
    def filename(self) -> str:
        return f"{self.id}.jpg"

    @property
    def tags(self) -> dict[str, str]:
        return {"category": self.category, "colour": self.colour, "pattern": self.pattern}


def products(variants: int = 1, seed: int = 0) -> list[Product]:
    """Every (category, colour, pattern), ``variants`` renderings each: 256 per variant."""
    out = []
    for category in CATEGORIES:
        for colour in COLOURS:
            for pattern in PATTERNS:
                for v in range(variants):
                    n = len(out)
                    out.append(
                        Product(
                            id=f"{category}-{colour}-{pattern}-{v}",
                            category=category,
                            colour=colour,
                            pattern=pattern,
                            seed=seed * 1_000_003 + n,
                        )
                    )
    return out


def queries(n: int, seed: int = 7) -> list[Product]:
    """``n`` held-out products: random labels, renderings from seeds the catalog never uses."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        out.append(
            Product(
                id=f"query-{i}",
                category=rng.choice(CATEGORIES),
                colour=rng.choice(list(COLOURS)),
                pattern=rng.choice(PATTERNS),
                seed=10**9 + seed * 100_003 + i,
            )
        )
    return out


def _shade(rgb: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    if factor >= 1:
        return tuple(int(c + (255 - c) * (factor - 1)) for c in rgb)  # type: ignore[return-value]
    return tuple(int(c * factor) for c in rgb)  # type: ignore[return-value]


def _fill(size: int, colour: tuple[int, int, int], pattern: str, rng: random.Random) -> Image.Image:
    base = Image.new("RGB", (size, size), colour)
    draw = ImageDraw.Draw(base)
    second = _shade(colour, 1.6) if sum(colour) < 200 else _shade(colour, 0.45)
    step = rng.randint(18, 30)
    if pattern == "striped":
        width = step // 2
        for y in range(-size, size * 2, step):
            draw.rectangle((0, y, size, y + width - 1), fill=second)
        base = base.rotate(rng.choice((0, 0, 90, 45)), fillcolor=colour)
    elif pattern == "dotted":
        r = step // 4
        for y in range(0, size, step):
            for x in range((y // step % 2) * step // 2, size, step):
                draw.ellipse((x - r, y - r, x + r, y + r), fill=second)
    elif pattern == "checked":
        for y in range(0, size, step):
            for x in range(0, size, step):
                if (x // step + y // step) % 2:
                    draw.rectangle((x, y, x + step - 1, y + step - 1), fill=second)
    return base


def render(product: Product, size: int = SIZE) -> Image.Image:
    """The product's photo: its silhouette, colour and pattern, placed by its seed."""
    rng = random.Random(product.seed)
    tint = [rng.randint(225, 250) for _ in range(3)]
    background = Image.new("RGB", (size, size), tuple(tint))  # type: ignore[arg-type]
    scale = rng.uniform(0.78, 1.0) * size
    dx = rng.uniform(-0.08, 0.08) * size + (size - scale) / 2
    dy = rng.uniform(-0.06, 0.06) * size + (size - scale) / 2
    mask = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    polygons = SHAPES[product.category]()
    for polygon in polygons:
        draw.polygon([(dx + x * scale, dy + y * scale) for x, y in polygon], fill=255)
    angle = rng.uniform(-8, 8)
    mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR)
    colour = _shade(COLOURS[product.colour], rng.uniform(0.85, 1.12))
    fill = _fill(size, colour, product.pattern, rng)
    shadow = mask.filter(ImageFilter.GaussianBlur(6)).point(lambda v: int(v * 0.35))
    background.paste((120, 120, 120), (4, 6), shadow)
    background.paste(fill, (0, 0), mask)
    outline = mask.filter(ImageFilter.FIND_EDGES).point(lambda v: 255 if v > 60 else 0)
    background.paste(_shade(colour, 0.6), (0, 0), outline)
    return background


def write(items: list[Product], folder: str, progress: Callable[[int], None] | None = None) -> None:
    """Render ``items`` into ``folder`` as JPEG files (kept when already there)."""
    os.makedirs(folder, exist_ok=True)
    for item in items:
        path = os.path.join(folder, item.filename)
        if not os.path.exists(path):
            tmp = path + ".tmp"
            render(item).save(tmp, "JPEG", quality=90)
            os.replace(tmp, path)
        if progress is not None:
            progress(1)


def iter_folder(folder: str) -> Iterator[str]:
    """Image files in ``folder`` (recursively), sorted."""
    found = []
    for root, _, files in os.walk(folder):
        for name in files:
            if name.lower().endswith((".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif")):
                found.append(os.path.join(root, name))
    yield from sorted(found)
