"""Image side of OFA's grounding pipeline: base64 → RGB → square patch → normalised tensor.

OFA resizes every image to ``s``×``s`` with PIL bicubic (aspect ratio not kept), then ToTensor and
Normalize(0.5, 0.5). Doing the same steps in the same dtype (uint8 → float32 / 255 → (x-m)/s)
reproduces the official patch images bit for bit.
"""

from __future__ import annotations

import base64
import binascii
from io import BytesIO
from typing import Sequence, Tuple

import numpy as np
import torch
from PIL import Image

OFA_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def decode_image_b64(data: str) -> Image.Image:
    """Decode a base64 (URL-safe or standard alphabet) encoded image file to an RGB PIL image.

    Raises ``ValueError`` with a short reason for bad base64 or bytes PIL cannot open.
    """
    try:
        raw = base64.urlsafe_b64decode(data)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"image column is not valid base64 ({exc})") from None
    if not raw:
        raise ValueError("image column is empty")
    try:
        image = Image.open(BytesIO(raw))
        image.load()
    except Exception as exc:
        raise ValueError(f"image bytes could not be decoded by PIL ({type(exc).__name__}: {exc})") from None
    return image.convert("RGB")


def encode_image_b64(image: Image.Image, fmt: str = "JPEG", quality: int = 90) -> str:
    """Standard base64 of the encoded image file, the inverse of :func:`decode_image_b64`."""
    buf = BytesIO()
    if fmt.upper() == "JPEG":
        image.save(buf, format="JPEG", quality=quality)
    else:
        image.save(buf, format=fmt.upper())
    return base64.b64encode(buf.getvalue()).decode("ascii")


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """OFA's RandomResize([s], max_size=s): always exactly ``size``×``size``, bicubic."""
    return image.resize((size, size), Image.BICUBIC)


def to_normalised_tensor(
    image: Image.Image, mean: Sequence[float] = OFA_MEAN_STD[0], std: Sequence[float] = OFA_MEAN_STD[1]
) -> torch.Tensor:
    """``[3, H, W]`` float32: ``(uint8 / 255 - mean) / std`` (torchvision ToTensor + Normalize)."""
    arr = np.asarray(image.convert("RGB"), dtype=np.uint8)
    x = torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
    m = torch.as_tensor(mean, dtype=torch.float32).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(-1, 1, 1)
    return x.sub_(m).div_(s)


class PatchTransform:
    """Callable image → (patch tensor ``[3, s, s]``, original ``(width, height)``)."""

    def __init__(self, patch_image_size: int = 512, imagenet_default_mean_and_std: bool = False):
        if patch_image_size < 1:
            raise ValueError(f"patch_image_size must be >= 1, got {patch_image_size}")
        self.patch_image_size = patch_image_size
        self.mean, self.std = IMAGENET_MEAN_STD if imagenet_default_mean_and_std else OFA_MEAN_STD

    def __call__(self, image: Image.Image) -> Tuple[torch.Tensor, Tuple[int, int]]:
        size = image.size
        patch = to_normalised_tensor(resize_square(image, self.patch_image_size), self.mean, self.std)
        return patch, size
