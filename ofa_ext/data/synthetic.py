"""Synthetic referring-expression data in OFA's grounding TSV layout (for CPU demos and tests).

Each image is a plain background with 2–4 well separated, large shapes; each row's expression
picks out exactly one of them and the row's region is that shape's box. Variants mimic what
distinguishes the real datasets, so that tasks differ in the way π-Tuning's task similarity needs:

* ``refcoco``  — colour + shape + position words ("left red circle", "blue square on the top").
* ``refcoco+`` — appearance only, no position words ("big red circle", "the green one").
* ``refcocog`` — longer sentences relating the target to another object
  ("a small red circle to the left of the blue square").
* ``largest``  — a different task in the same format: the text is always generic
  ("the largest object"), the answer is decided by size alone (the image alone decides).
* ``region``   — the opposite one: the text names a part of the image ("the top left quarter",
  "the right half") and the answer is that part, whatever the shapes drawn (the text alone decides).

Rows are ``uniq-id, image-id, text, "x0,y0,x1,y1", base64 image`` (read with
``selected_cols="0,4,2,3"``); the same seed gives the same files.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from PIL import Image, ImageDraw

from ..utils.files import atomic_path, atomic_write_text
from .transforms import encode_image_b64

COLOURS: Dict[str, Tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (245, 215, 40),
    "purple": (155, 60, 205),
    "white": (245, 245, 245),
}
SHAPES = ("circle", "square", "triangle", "diamond")
VARIANTS = ("refcoco", "refcoco+", "refcocog", "largest", "region")
SPLITS = ("train", "valid", "test")
_SPLIT_ID_BASE = {"train": 100000, "valid": 200000, "test": 300000}


@dataclass
class SceneObject:
    shape: str
    colour: str
    box: Tuple[int, int, int, int]  # x0, y0, x1, y1 (pixel edges: the shape covers [x0, x1) × [y0, y1))

    @property
    def cx(self) -> float:
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        return (self.box[1] + self.box[3]) / 2

    @property
    def side(self) -> int:
        return self.box[2] - self.box[0]


@dataclass
class Scene:
    size: int
    background: Tuple[int, int, int]
    objects: List[SceneObject] = field(default_factory=list)
    target: int = 0
    text: str = ""
    region: Optional[Tuple[int, int, int, int]] = None  # an answer that is a part of the image, not an object

    @property
    def answer(self) -> Tuple[int, int, int, int]:
        """The row's box: the named region, or the target object's box."""
        return self.region if self.region is not None else self.objects[self.target].box

    def render(self) -> Image.Image:
        image = Image.new("RGB", (self.size, self.size), self.background)
        draw = ImageDraw.Draw(image)
        for obj in self.objects:
            draw_shape(draw, obj)
        return image


def draw_shape(draw: ImageDraw.ImageDraw, obj: SceneObject) -> None:
    """Draw ``obj`` filling exactly its box (PIL's boxes include their last pixel, hence the -1)."""
    x0, y0, x1, y1 = obj.box
    fill = COLOURS[obj.colour]
    xm, ym = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
    if obj.shape == "circle":
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif obj.shape == "square":
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
    elif obj.shape == "triangle":
        draw.polygon([(xm, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(xm, y0), (x1 - 1, ym), (xm, y1 - 1), (x0, ym)], fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")


# -- placement ------------------------------------------------------------------------------------
def _separated(a: Sequence[int], b: Sequence[int], gap: int) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _place(rng: random.Random, size: int, side: int, taken: List[Tuple[int, int, int, int]],
           accept: Optional[Callable[[Tuple[int, int, int, int]], bool]] = None, tries: int = 200):
    margin = max(1, size // 32)
    gap = max(2, size // 24)
    hi = size - margin - side
    if hi < margin:
        return None
    for _ in range(tries):
        x0, y0 = rng.randint(margin, hi), rng.randint(margin, hi)
        box = (x0, y0, x0 + side, y0 + side)
        if all(_separated(box, t, gap) for t in taken) and (accept is None or accept(box)):
            return box
    return None


def _side(rng: random.Random, size: int, lo: float, hi: float) -> int:
    return max(4, int(round(size * rng.uniform(lo, hi))))


def _background(rng: random.Random) -> Tuple[int, int, int]:
    g = rng.randint(25, 80)
    return (g + rng.randint(-10, 10), g + rng.randint(-10, 10), g + rng.randint(-10, 10))


SMALL, LARGE = (0.17, 0.23), (0.32, 0.40)


def _fill_distractors(rng, scene: Scene, n_total: int, forbidden: Callable[[str, str], bool], side_range=None) -> bool:
    """Add random distractors whose (colour, shape) passes ``forbidden``; False if they do not fit."""
    while len(scene.objects) < n_total:
        for _ in range(50):
            colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
            if not forbidden(colour, shape):
                break
        else:
            return False
        lo, hi = side_range or (SMALL[0], LARGE[1])
        box = _place(rng, scene.size, _side(rng, scene.size, lo, hi), [o.box for o in scene.objects])
        if box is None:
            return False
        scene.objects.append(SceneObject(shape, colour, box))
    return True


def _absolute_position(obj: SceneObject, size: int) -> str:
    if obj.cx < size / 3:
        return "left"
    if obj.cx > 2 * size / 3:
        return "right"
    if obj.cy < size / 3:
        return "top"
    if obj.cy > 2 * size / 3:
        return "bottom"
    return "middle"


# -- variants -------------------------------------------------------------------------------------
def _scene_refcoco(rng: random.Random, size: int) -> Optional[Scene]:
    scene = Scene(size, _background(rng))
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    n_total = rng.randint(2, 4)
    # target and twin sizes come from the distractors' range, so "pick the largest" is no shortcut
    box = _place(rng, size, _side(rng, size, SMALL[0], LARGE[1]), [])
    if box is None:
        return None
    target = SceneObject(shape, colour, box)
    scene.objects.append(target)
    if rng.random() < 0.5:  # a twin of the same colour and shape: position words must tell them apart
        axis = rng.choice("xy")
        far = 0.25 * size

        def apart(b):
            c = ((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
            return abs((c[0] - target.cx) if axis == "x" else (c[1] - target.cy)) >= far

        twin_box = _place(rng, size, _side(rng, size, SMALL[0], LARGE[1]), [target.box], accept=apart)
        if twin_box is None:
            return None
        twin = SceneObject(shape, colour, twin_box)
        scene.objects.append(twin)
        if axis == "x":
            pos = "left" if target.cx < twin.cx else "right"
        else:
            pos = "top" if target.cy < twin.cy else "bottom"
    else:
        pos = _absolute_position(target, size)
    if not _fill_distractors(rng, scene, max(n_total, len(scene.objects)), lambda c, s: (c, s) == (colour, shape)):
        return None
    if pos == "middle":
        scene.text = rng.choice([f"{colour} {shape} in the middle", f"the {colour} {shape} in the center"])
    else:
        scene.text = rng.choice([f"{pos} {colour} {shape}", f"{colour} {shape} on the {pos}",
                                 f"the {colour} {shape} on the {pos}"])
    return scene


def _scene_refcoco_plus(rng: random.Random, size: int) -> Optional[Scene]:
    scene = Scene(size, _background(rng))
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    n_total = rng.randint(2, 4)
    if rng.random() < 0.4:  # a twin that differs only in size
        big = rng.random() < 0.5
        sides = [_side(rng, size, *LARGE), _side(rng, size, *SMALL)]
        if not big:
            sides.reverse()
        for side in sides:
            box = _place(rng, size, side, [o.box for o in scene.objects])
            if box is None:
                return None
            scene.objects.append(SceneObject(shape, colour, box))
        word = rng.choice(["big", "large", "bigger"] if big else ["small", "little", "smaller"])
        text = rng.choice([f"{word} {colour} {shape}", f"the {word} {colour} {shape}"])
        ok = _fill_distractors(rng, scene, max(n_total, 2), lambda c, s: (c, s) == (colour, shape))
    else:
        box = _place(rng, size, _side(rng, size, SMALL[0], LARGE[1]), [])
        if box is None:
            return None
        scene.objects.append(SceneObject(shape, colour, box))
        mode = rng.choice(["both", "colour", "shape"])
        if mode == "colour":  # only the target has this colour
            ok = _fill_distractors(rng, scene, n_total, lambda c, s: c == colour)
            text = rng.choice([f"{colour} one", f"the {colour} object", f"{colour} thing"])
        elif mode == "shape":  # only the target has this shape
            ok = _fill_distractors(rng, scene, n_total, lambda c, s: s == shape)
            text = rng.choice([f"the {shape}", f"{shape}"])
        else:
            ok = _fill_distractors(rng, scene, n_total, lambda c, s: (c, s) == (colour, shape))
            text = rng.choice([f"{colour} {shape}", f"the {colour} {shape}"])
    if not ok:
        return None
    scene.text = text
    return scene


def _relation(rng: random.Random, a: SceneObject, b: SceneObject) -> Optional[str]:
    """A strictly true spatial relation of ``a`` to ``b`` (placed boxes are disjoint on some axis)."""
    options = []
    if a.box[2] <= b.box[0]:
        options.append("to the left of")
    if b.box[2] <= a.box[0]:
        options.append("to the right of")
    if a.box[3] <= b.box[1]:
        options.append("above")
    if b.box[3] <= a.box[1]:
        options.append("below")
    return rng.choice(options) if options else None


def _scene_refcocog(rng: random.Random, size: int) -> Optional[Scene]:
    scene = Scene(size, _background(rng))
    n_total = rng.randint(2, 4)
    pairs = rng.sample([(c, s) for c in COLOURS for s in SHAPES], n_total)  # every (colour, shape) unique
    for colour, shape in pairs:
        box = _place(rng, size, _side(rng, size, SMALL[0], LARGE[1]), [o.box for o in scene.objects])
        if box is None:
            return None
        scene.objects.append(SceneObject(shape, colour, box))
    t = rng.randrange(n_total)
    scene.target = t
    target = scene.objects[t]
    ref = scene.objects[rng.choice([i for i in range(n_total) if i != t])]
    rel = _relation(rng, target, ref)
    if rel is None:
        return None
    size_word = "big" if target.side >= size * (SMALL[1] + LARGE[0]) / 2 else "small"
    templates = [
        "a {sz} {c} {s} {rel} the {c2} {s2}",
        "the {c} {s} that is {rel} the {c2} {s2}",
        "there is a {sz} {c} {s} {rel} a {c2} {s2}",
        "a {c} colored {s} which is {rel} the {c2} {s2}",
    ]
    scene.text = rng.choice(templates).format(sz=size_word, c=target.colour, s=target.shape, rel=rel,
                                              c2=ref.colour, s2=ref.shape)
    return scene


def _scene_largest(rng: random.Random, size: int) -> Optional[Scene]:
    scene = Scene(size, _background(rng))
    n_total = rng.randint(2, 4)
    box = _place(rng, size, _side(rng, size, 0.36, 0.44), [])
    if box is None:
        return None
    scene.objects.append(SceneObject(rng.choice(SHAPES), rng.choice(list(COLOURS)), box))
    if not _fill_distractors(rng, scene, n_total, lambda c, s: False, side_range=(0.14, 0.24)):
        return None
    scene.text = rng.choice(["the largest object", "the biggest shape", "largest one"])
    return scene


def _regions(size: int) -> Dict[str, Tuple[int, int, int, int]]:
    """The named parts of a square image: four halves, four quarters and the centre."""
    h, q = size // 2, size // 4
    return {"left half": (0, 0, h, size), "right half": (h, 0, size, size),
            "top half": (0, 0, size, h), "bottom half": (0, h, size, size),
            "top left quarter": (0, 0, h, h), "top right quarter": (h, 0, size, h),
            "bottom left quarter": (0, h, h, size), "bottom right quarter": (h, h, size, size),
            "centre": (q, q, size - q, size - q)}


def _scene_region(rng: random.Random, size: int) -> Optional[Scene]:
    scene = Scene(size, _background(rng))
    if not _fill_distractors(rng, scene, rng.randint(2, 4), lambda c, s: False):
        return None
    name, scene.region = rng.choice(sorted(_regions(size).items()))
    scene.text = rng.choice([f"the {name} of the image", f"{name} of the picture", f"the {name}"])
    return scene


_BUILDERS = {"refcoco": _scene_refcoco, "refcoco+": _scene_refcoco_plus, "refcocog": _scene_refcocog,
             "largest": _scene_largest, "region": _scene_region}


def make_scene(rng: random.Random, variant: str, size: int = 96) -> Scene:
    """One scene with its expression; objects are shuffled so the target's index carries no signal."""
    if variant not in _BUILDERS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if size < 32:
        raise ValueError(f"image size must be >= 32 px, got {size}")
    for _ in range(1000):
        scene = _BUILDERS[variant](rng, size)
        if scene is not None:
            target = scene.objects[scene.target]
            rng.shuffle(scene.objects)
            scene.target = scene.objects.index(target)  # (meaningless, and harmless, for a region answer)
            return scene
    raise RuntimeError(f"could not place objects for variant {variant!r} at size {size}")


def generate_scenes(variant: str, n: int, seed: int, split: str = "train", image_size: int = 96,
                    image_format: str = "JPEG") -> Iterator[Tuple[List[str], Scene]]:
    """``n`` (TSV row, scene) pairs for one split; deterministic in (variant, seed, split)."""
    if split not in _SPLIT_ID_BASE:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    rng = random.Random(f"ofa_ext-synthetic/{variant}/{seed}/{split}")
    for i in range(n):
        scene = make_scene(rng, variant, image_size)
        image_id = _SPLIT_ID_BASE[split] + i
        row = [f"{image_id}_0", str(image_id), scene.text, ",".join(f"{v:.1f}" for v in scene.answer),
               encode_image_b64(scene.render(), image_format)]
        yield row, scene


def generate_rows(variant: str, n: int, seed: int, split: str = "train", image_size: int = 96,
                  image_format: str = "JPEG") -> Iterator[List[str]]:
    """``n`` TSV rows (5 columns) for one split; deterministic in (variant, seed, split)."""
    for row, _ in generate_scenes(variant, n, seed, split, image_size, image_format):
        yield row


def write_tsv(path: Union[str, Path], rows: Iterator[Sequence[str]]) -> int:
    """Write rows as tab-separated UTF-8 lines, all or nothing (an interrupted run leaves no partial
    file); returns the row count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            if any("\t" in c or "\n" in c for c in row):
                raise ValueError(f"row {n}: a column contains a tab or newline")
            f.write("\t".join(row) + "\n")
            n += 1
    return n


def make_grounding_splits(out_dir: Union[str, Path], variant: str = "refcoco", seed: int = 1,
                          n_train: int = 2000, n_valid: int = 200, n_test: int = 200,
                          image_size: int = 96, image_format: str = "JPEG") -> Dict[str, Path]:
    """Write ``train.tsv``, ``valid.tsv``, ``test.tsv`` (+ ``{split}.objects.jsonl``, every object's box) into
    ``out_dir``, each file all or nothing; ``test.objects.jsonl`` is the last written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in zip(SPLITS, (n_train, n_valid, n_test)):
        if n < 0:
            raise ValueError(f"row count for {split} must be >= 0, got {n}")
        paths[split] = out / f"{split}.tsv"
        objects = []
        rows = generate_scenes(variant, n, seed, split, image_size, image_format)
        write_tsv(paths[split], (_record_objects(row, scene, objects) for row, scene in rows))
        atomic_write_text(out / f"{split}.objects.jsonl", "".join(json.dumps(o) + "\n" for o in objects))
    return paths


def _record_objects(row: List[str], scene: Scene, sink: List[dict]) -> List[str]:
    """Keep every object's box beside the row: baselines such as "the largest object" need them."""
    target = scene.target if scene.region is None else None
    sink.append({"id": row[0], "boxes": [list(o.box) for o in scene.objects], "target": target})
    return row
