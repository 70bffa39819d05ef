"""The trunk's inference path (batch norm folded into the convolutions, channels-last max pooling)
against the module path.

Eval mode with autograd on runs every batch norm as a module (the reference); eval mode under
``torch.no_grad`` folds them into the convolutions. Both must agree to float rounding, with
running statistics and affine parameters far from their initial values so that folding matters.
"""

import torch

from ofa_ext.models.ofa.resnet import build_resnet


def _trunk():
    torch.manual_seed(0)
    net = build_resnet("resnet_nano")
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.1)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.num_features, generator=g))
                m.bias.copy_(torch.randn(m.num_features, generator=g))
    return net.eval()


def test_folded_batch_norm_equals_module_path():
    net = _trunk()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        folded = net(x)
    reference = net(x).detach()  # autograd on: the batch norms run as modules
    assert folded.shape == reference.shape
    scale = reference.abs().max().item()
    assert (folded - reference).abs().max().item() <= 1e-5 * scale, (folded - reference).abs().max().item() / scale
    assert not torch.equal(reference, torch.zeros_like(reference))


def test_training_mode_keeps_batch_statistics():
    net = _trunk().train()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    before = net.bn1.running_mean.clone()
    with torch.no_grad():
        net(x)
    assert not torch.equal(before, net.bn1.running_mean)  # batch statistics used and tracked: not folded


def test_folded_batch_norm_in_bfloat16():
    """The fold runs in fp32 and casts back: bf16 inference stays at the module path's precision."""
    net = _trunk().to(torch.bfloat16)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)).to(torch.bfloat16)
    with torch.no_grad():
        folded = net(x)
    reference = net(x).detach()
    assert folded.dtype == torch.bfloat16
    scale = reference.float().abs().max().item()
    assert (folded.float() - reference.float()).abs().max().item() <= 0.05 * scale
