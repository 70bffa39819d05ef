"""Text templates that turn class names into text samples (Lin et al.'s ``engine/templates``).

``classname`` (``"{}"``), ``vanilla`` (``"a photo of a {}."``) and ``hand_crafted`` (the
per-dataset templates Tip-Adapter selected; ImageNet's 7, one for the other CoOp datasets, see
``specs/crossmodal_adaptation.md`` §2). Underscores in class names become spaces.
"""

from typing import Dict, List, Optional, Tuple

IMAGENET_HAND_CRAFTED = (
    "itap of a {}.", "a bad photo of the {}.", "a origami {}.", "a photo of the large {}.",
    "a {} in a video game.", "art of the {}.", "a photo of the small {}.",
)
HAND_CRAFTED: Dict[str, Tuple[str, ...]] = {
    "imagenet": IMAGENET_HAND_CRAFTED,
    "flowers": ("a photo of a {}, a type of flower.",),
    "aircraft": ("a photo of a {}, a type of aircraft.",),
    "food": ("a photo of {}, a type of food.",),
    "pets": ("a photo of a {}, a type of pet.",),
    "cars": ("a photo of a {}.",),
    "caltech": ("a photo of a {}.",),
    "sun": ("a photo of a {}.",),
    "dtd": ("{} texture.",),
    "ucf101": ("a photo of a person doing {}.",),
    "eurosat": ("a centered satellite photo of {}.",),
}
TEMPLATE_SETS = ("classname", "vanilla", "hand_crafted")


def templates(name: str, dataset: Optional[str] = None) -> List[str]:
    """The templates of set ``name``; ``hand_crafted`` needs ``dataset`` (a key of HAND_CRAFTED)."""
    if name == "classname":
        return ["{}"]
    if name == "vanilla":
        return ["a photo of a {}."]
    if name == "hand_crafted":
        if dataset not in HAND_CRAFTED:
            raise ValueError(f"--templates hand_crafted needs --dataset-name, one of {', '.join(HAND_CRAFTED)}; "
                             f"got {dataset!r}")
        return list(HAND_CRAFTED[dataset])
    raise ValueError(f"--templates must be one of {', '.join(TEMPLATE_SETS)}, got {name!r}")


def class_texts(classnames: List[str], template_list: List[str]) -> Tuple[List[str], List[int], List[int]]:
    """One text per (class, template), class-major: (texts, labels, template ids)."""
    texts, labels, ids = [], [], []
    for c, name in enumerate(classnames):
        for t, template in enumerate(template_list):
            texts.append(template.format(name.replace("_", " ")))
            labels.append(c)
            ids.append(t)
    return texts, labels, ids
