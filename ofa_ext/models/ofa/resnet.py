"""OFA's visual trunk: the first three stages of a Bottleneck ResNet (stride 16, 1024 channels).

Our test/demo trunk `resnet_nano` is also narrower (base width 16, 256 output channels): the trunk
dominates a small model's step time, and a CPU demo needs it ~10x cheaper.

Module names (`conv1`, `bn1`, `layer{1,2,3}.{i}.conv{1,2,3}`, `downsample.{0,1}`) equal the official
`encoder.embed_images.*` keys. There is no `layer4`, pooling or classifier.
"""

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

from .drop_path import DropPath, linear_rates

# Block counts per stage. resnet18/34 are OFA's names but still use Bottleneck blocks;
# resnet_nano is ours, for tests and CPU demos.
RESNET_DEPTHS: dict[str, tuple[int, int, int]] = {
    "resnet_nano": (1, 1, 1),
    "resnet18": (2, 2, 2),
    "resnet34": (3, 4, 6),
    "resnet50": (3, 4, 6),
    "resnet101": (3, 4, 23),
    "resnet152": (3, 8, 36),
}
# Base width (stem channels, planes of layer1); the official trunks use 64.
RESNET_WIDTHS: dict[str, int] = {"resnet_nano": 16}
EXPANSION = 4
# How the trunk lays its activations out (`--resnet-layout`, set_trunk_layout): "contiguous" is torch's
# default and OFA's; "channels_last" is faster on the CPU; "auto" is channels-last on the CPU and
# contiguous elsewhere. Inside torch.func transforms (no channels-last layout there) it is contiguous.
TRUNK_LAYOUTS = ("contiguous", "channels_last", "auto")


def _conv(x: torch.Tensor, weight: torch.Tensor, bias, conv: nn.Conv2d, stride) -> torch.Tensor:
    """``conv`` with these weights. An unstrided 1×1 convolution of a channels-last input is a matrix
    product over the pixels, one GEMM whose backward is two more (the same products): on the CPU it
    replaces torch's slow NCHW kernel for 1×1; with oneDNN's channels-last 3×3 kernels it makes the
    channels-last trunk's 12–16 % gain."""
    one_by_one = conv.kernel_size == (1, 1) and tuple(stride) == (1, 1) and conv.padding == (0, 0)
    if one_by_one and conv.groups == 1 and x.dim() == 4 and x.stride(1) == 1:
        return F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias).permute(0, 3, 1, 2)
    return F.conv2d(x, weight, bias, stride, conv.padding, conv.dilation, conv.groups)


def conv_bn(x: torch.Tensor, conv: nn.Conv2d, bn: nn.BatchNorm2d, stride=None) -> torch.Tensor:
    """``bn(conv(x))`` (``stride`` overrides the convolution's). In pure inference (eval mode, no
    autograd) batch norm is an affine map of its running statistics, so it is folded into the
    convolution's weights: one pass over the activations fewer per layer, the same result up to
    float rounding. Training, and eval with gradients (a frozen trunk under training), keep the
    two modules as they are."""
    stride = conv.stride if stride is None else (stride, stride)
    if bn.training or torch.is_grad_enabled() or bn.running_mean is None:
        return bn(_conv(x, conv.weight, conv.bias, conv, stride))
    f32 = [None if t is None else t.float() for t in (conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                        bn.weight, bn.bias)]  # folded in fp32, as bn computes
    w, b = fuse_conv_bn_weights(f32[0], f32[1], f32[2], f32[3], bn.eps, f32[4], f32[5])
    return _conv(x, w.to(x.dtype), b.to(x.dtype), conv, stride)


class Bottleneck(nn.Module):
    """torchvision-style Bottleneck v1.5 (stride on the 3×3 conv) with drop path on the branch."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1, drop_path_rate: float = 0.0) -> None:
        super().__init__()
        out = planes * EXPANSION
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        self.drop_path = DropPath(drop_path_rate, batch_dim=0)

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        """The downsample branch. A strided 1×1 convolution reads every s-th pixel only, so it runs as
        an unstrided one on the subsampled input: the same products, and on the CPU its backward
        is ~2x faster (no full-resolution input gradient through the strided kernel)."""
        if self.downsample is None:
            return x
        conv, bn = self.downsample[0], self.downsample[1]
        s = conv.stride[0]
        if s > 1 and conv.kernel_size == (1, 1) and conv.padding == (0, 0):
            return conv_bn(x[:, :, ::s, ::s], conv, bn, stride=1)
        return conv_bn(x, conv, bn)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self._shortcut(x)
        y = self.relu(conv_bn(x, self.conv1, self.bn1))
        y = self.relu(conv_bn(y, self.conv2, self.bn2))
        y = conv_bn(y, self.conv3, self.bn3)
        return self.relu(identity + self.drop_path(y))


class ResNetTrunk(nn.Module):
    """Stem + three Bottleneck stages: [B, 3, H, W] → [B, 16·width, H/16, W/16] (1024 channels officially)."""

    def __init__(self, depths: Sequence[int], drop_path_rate: float = 0.0, width: int = 64) -> None:
        super().__init__()
        if len(depths) != 3:
            raise ValueError(f"OFA's trunk has 3 stages; got block counts {list(depths)}")
        self.out_channels = 4 * width * EXPANSION
        self.layout = "contiguous"
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        for i, (planes, n, stride) in enumerate(zip((width, 2 * width, 4 * width), depths, (1, 2, 2))):
            # block 0 of each stage never drops; block k gets linspace(0, rate, n)[k]
            rates = linear_rates(drop_path_rate, n)
            blocks = []
            for k in range(n):
                blocks.append(Bottleneck(inplanes, planes, stride if k == 0 else 1, rates[k]))
                inplanes = planes * EXPANSION
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.size(1) != 3:
            raise ValueError(f"patch_images must be [B, 3, H, W]; got {tuple(images.shape)}")
        channels_last = self.channels_last_for(images)
        x = images.contiguous(memory_format=torch.channels_last) if channels_last else images
        x = self._max_pool(self.relu(conv_bn(x, self.conv1, self.bn1)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.contiguous() if channels_last else x

    def channels_last_for(self, images: torch.Tensor) -> bool:
        """Whether this forward runs channels-last (``layout``, see TRUNK_LAYOUTS). On the CPU a training
        step of the trunk is 12–16 % faster so: the 3×3 convolutions take oneDNN's channels-last kernels
        and the 1×1 ones become matrix products (``_conv``). Not the default: the sums are rounded in
        another order, and a model trained from scratch ends elsewhere (benchmarks/RESULTS.md)."""
        if torch._C._functorch.is_functorch_wrapped_tensor(images):
            return False  # torch.func transforms have no channels-last layout
        return self.layout == "channels_last" or (self.layout == "auto" and images.device.type == "cpu")

    def _max_pool(self, x: torch.Tensor) -> torch.Tensor:
        """In pure inference on the CPU, max pooling runs channels-last: the same maxima, ~3x faster
        (torch's NCHW kernel is slow there). A trunk already channels-last pools as it is; a
        contiguous one in training keeps NCHW, and so do torch.func transforms (they have no
        channels-last layout)."""
        if (x.stride(1) == 1 or self.training or torch.is_grad_enabled() or x.device.type != "cpu"
                or torch._C._functorch.is_functorch_wrapped_tensor(x)):
            return self.maxpool(x)
        return self.maxpool(x.contiguous(memory_format=torch.channels_last)).contiguous()


def set_trunk_layout(model: nn.Module, layout: str) -> None:
    """Set the activation layout of every ResNet trunk in ``model`` (one of TRUNK_LAYOUTS)."""
    if layout not in TRUNK_LAYOUTS:
        raise ValueError(f"unknown trunk layout {layout!r}; expected one of {list(TRUNK_LAYOUTS)}")
    for m in model.modules():
        if isinstance(m, ResNetTrunk):
            m.layout = layout


def build_resnet(resnet_type: str, drop_path_rate: float = 0.0) -> ResNetTrunk:
    """Trunk for an OFA `--resnet-type` name."""
    if resnet_type not in RESNET_DEPTHS:
        raise ValueError(f"unknown --resnet-type {resnet_type!r}; expected one of {sorted(RESNET_DEPTHS)}")
    return ResNetTrunk(RESNET_DEPTHS[resnet_type], drop_path_rate, RESNET_WIDTHS.get(resnet_type, 64))
