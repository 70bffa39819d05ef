"""Synthetic grounding data: expressions identify exactly one object, boxes match pixels, determinism."""

import json
import random
import re
import time

import numpy as np
import pytest

from ofa_ext.cli.make_grounding_data import main as make_data_main
from ofa_ext.data.synthetic import COLOURS, SHAPES, VARIANTS, generate_rows, make_scene
from ofa_ext.data.transforms import decode_image_b64

POSITION_WORDS = {"left", "right", "top", "bottom", "middle", "center", "above", "below"}
SIZE_WORDS = {"big": 1, "large": 1, "bigger": 1, "small": -1, "little": -1, "smaller": -1}
OBJECT_VARIANTS = [v for v in VARIANTS if v != "region"]  # the answer is one of the drawn objects


def _attrs(words):
    return [w for w in words if w in COLOURS], [w for w in words if w in SHAPES]


def resolve(text, objects, size):
    """Independent reading of an expression: indices of the objects it can refer to."""
    words = text.split()
    colours, shapes = _attrs(words)
    if "largest" in words or "biggest" in words:
        sides = [o.side for o in objects]
        return [i for i, s in enumerate(sides) if s == max(sides)]
    if " of the " in text or "above" in words or "below" in words:  # refcocog: "<c> <s> REL <c2> <s2>"
        (c, c2), (s, s2) = colours, shapes
        rel = next(r for r in ("left of", "right of", "above", "below") if r in text)
        ref = [o for o in objects if (o.colour, o.shape) == (c2, s2)]
        assert len(ref) == 1
        r = ref[0].box
        ok = {"left of": lambda b: b[2] <= r[0], "right of": lambda b: b[0] >= r[2],
              "above": lambda b: b[3] <= r[1], "below": lambda b: b[1] >= r[3]}[rel]
        return [i for i, o in enumerate(objects) if (o.colour, o.shape) == (c, s) and ok(o.box)]
    cands = [i for i, o in enumerate(objects)
             if (not colours or o.colour in colours) and (not shapes or o.shape in shapes)]
    pos = [w for w in words if w in POSITION_WORDS]
    if pos and len(cands) > 1:
        key = {"left": lambda o: o.cx, "right": lambda o: -o.cx, "top": lambda o: o.cy, "bottom": lambda o: -o.cy}[pos[0]]
        best = min(key(objects[i]) for i in cands)
        cands = [i for i in cands if key(objects[i]) == best]
    elif pos:
        o = objects[cands[0]]
        third = size / 3
        expected = ("left" if o.cx < third else "right" if o.cx > 2 * third else
                    "top" if o.cy < third else "bottom" if o.cy > 2 * third else None)
        assert pos[0] == expected or (expected is None and pos[0] in ("middle", "center")), (text, o)
    sz = [SIZE_WORDS[w] for w in words if w in SIZE_WORDS]
    if sz and len(cands) > 1:
        sides = sorted({objects[i].side for i in cands})
        want = sides[-1] if sz[0] > 0 else sides[0]
        cands = [i for i in cands if objects[i].side == want]
    return cands


@pytest.mark.parametrize("variant", OBJECT_VARIANTS)
def test_expressions_identify_exactly_the_target(variant):
    rng = random.Random(7)
    texts = set()
    for _ in range(300):
        scene = make_scene(rng, variant, 96)
        assert 2 <= len(scene.objects) <= 4
        assert resolve(scene.text, scene.objects, 96) == [scene.target], (scene.text, scene.objects)
        texts.add(scene.text)
        words = set(scene.text.split())
        if variant == "refcoco+":
            assert not words & POSITION_WORDS, scene.text
        if variant == "refcocog":
            assert len(scene.text.split()) >= 7
    assert len(texts) >= (3 if variant == "largest" else 50)


def test_rows_boxes_match_pixels():
    for variant in OBJECT_VARIANTS:
        for row in generate_rows(variant, 20, seed=5, split="valid", image_size=64, image_format="PNG"):
            assert len(row) == 5 and row[0] == f"{row[1]}_0"
            x0, y0, x1, y1 = (int(float(v)) for v in row[3].split(","))
            img = np.asarray(decode_image_b64(row[4]))
            window = img[max(0, y0 - 1):y1 + 1, max(0, x0 - 1):x1 + 1].astype(int)
            mask = np.abs(window - img[0, 0].astype(int)).sum(-1) > 30  # not background (objects keep a gap)
            ys, xs = np.nonzero(mask)
            oy, ox = max(0, y0 - 1), max(0, x0 - 1)
            got = (xs.min() + ox, ys.min() + oy, xs.max() + ox + 1, ys.max() + oy + 1)
            assert np.allclose(got, (x0, y0, x1, y1), atol=1), (variant, row[2], got, row[3])


def region_box(text, size):
    """Independent reading of a region expression: the part of a size x size image it names."""
    h = size / 2
    if "centre" in text:
        return (size / 4, size / 4, 3 * size / 4, 3 * size / 4)
    x0, x1 = (0, h) if "left" in text else (h, size) if "right" in text else (0, size)
    y0, y1 = (0, h) if "top" in text else (h, size) if "bottom" in text else (0, size)
    return (x0, y0, x1, y1)


def test_region_answers_are_decided_by_the_text_alone(tmp_path):
    rows = list(generate_rows("region", 300, seed=3, split="train", image_size=96))
    by_text = {}
    for row in rows:
        box = tuple(float(v) for v in row[3].split(","))
        assert box == region_box(row[2], 96), row[2]
        by_text.setdefault(box, set()).add(row[4])
    assert len(by_text) == 9  # four halves, four quarters, the centre
    assert all(len(images) > 5 for images in by_text.values())  # the same answer over many different images
    make_data_main(["--variant", "region", "--out", str(tmp_path), "--n-train", "4", "--n-valid", "1",
                    "--n-test", "1", "--image-size", "64"])
    objects = [json.loads(line) for line in (tmp_path / "train.objects.jsonl").read_text().splitlines()]
    assert all(o["target"] is None and 2 <= len(o["boxes"]) <= 4 for o in objects)


def test_deterministic_per_seed_and_split():
    a = list(generate_rows("refcoco", 10, seed=1, split="train", image_size=64))
    b = list(generate_rows("refcoco", 10, seed=1, split="train", image_size=64))
    c = list(generate_rows("refcoco", 10, seed=2, split="train", image_size=64))
    d = list(generate_rows("refcoco", 10, seed=1, split="test", image_size=64))
    assert a == b and a != c and [r[2] for r in a] != [r[2] for r in d]
    assert {r[1] for r in a}.isdisjoint({r[1] for r in d})


def test_cli_writes_three_splits_fast(tmp_path, capsys):
    start = time.perf_counter()
    assert make_data_main(["--variant", "refcocog", "--out", str(tmp_path), "--seed", "4", "--n-train", "400",
                           "--n-valid", "5", "--n-test", "6", "--image-size", "96"]) == 0
    elapsed = time.perf_counter() - start
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    lines = {s: (tmp_path / f"{s}.tsv").read_text().splitlines() for s in ("train", "valid", "test")}
    assert [len(lines[s]) for s in ("train", "valid", "test")] == [400, 5, 6] and info["variant"] == "refcocog"
    assert all(len(line.split("\t")) == 5 for s in lines for line in lines[s])
    assert re.fullmatch(r"[\d.]+,[\d.]+,[\d.]+,[\d.]+", lines["train"][0].split("\t")[3])
    assert elapsed < 10  # 2000 rows take about half a second on one core
    with pytest.raises(SystemExit):
        make_data_main(["--variant", "nope", "--out", str(tmp_path)])


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown variant"):
        make_scene(random.Random(0), "coco")
    with pytest.raises(ValueError, match=">= 32"):
        make_scene(random.Random(0), "refcoco", 16)
    with pytest.raises(ValueError, match="unknown split"):
        next(generate_rows("refcoco", 1, 0, split="val"))


def test_write_tsv_is_all_or_nothing(tmp_path):
    from ofa_ext.data.synthetic import write_tsv

    path = tmp_path / "train.tsv"
    assert write_tsv(path, [["a", "b"], ["c", "d"]]) == 2
    with pytest.raises(ValueError, match="row 1"):
        write_tsv(path, [["x", "y"], ["bad\tcolumn", "z"]])
    assert path.read_text() == "a\tb\nc\td\n"  # the earlier file is untouched, no partial one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.tsv"]
