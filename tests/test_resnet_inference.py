"""The trunk's inference path (batch norm folded into the convolutions, channels-last max pooling)
against the module path, and the channels-last layout (`--resnet-layout`) against the default one.

Eval mode with autograd on runs every batch norm as a module (the reference); eval mode under
``torch.no_grad`` folds them into the convolutions. Both must agree to float rounding, with
running statistics and affine parameters far from their initial values so that folding matters.
"""

import pytest
import torch

from ofa_ext.models.ofa.resnet import _conv, build_resnet, set_trunk_layout


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


def _step(net, x, layout: str):
    """Output, input gradient, parameter gradients and running means of one training forward + backward."""
    set_trunk_layout(net, layout)
    net.zero_grad()
    x = x.clone().requires_grad_(True)
    y = net(x)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    stats = {n: b.clone() for n, b in net.named_buffers() if n.endswith("running_mean")}
    return y.detach(), x.grad, grads, stats


def _close(a, b, rel=1e-4):
    return (a - b).abs().max().item() <= rel * b.abs().max().item() + 1e-7


def test_channels_last_training_equals_contiguous():
    """The channels-last trunk (1×1 convolutions as matrix products, oneDNN's channels-last kernels)
    against torch's default layout: the same outputs, gradients and batch statistics to fp32 rounding."""
    net = _trunk().train()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    y_ref, gx_ref, g_ref, s_ref = _step(net, x, "contiguous")
    net.load_state_dict(state)
    y, gx, g, s = _step(net, x, "channels_last")
    assert y.is_contiguous() and y.shape == y_ref.shape
    assert _close(y, y_ref) and _close(gx, gx_ref)
    assert g.keys() == g_ref.keys() and all(_close(g[n], g_ref[n]) for n in g), \
        max((g[n] - g_ref[n]).abs().max().item() / g_ref[n].abs().max().item() for n in g)
    assert all(_close(s[n], s_ref[n]) for n in s)


def test_channels_last_inference_equals_contiguous():
    net = _trunk()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        set_trunk_layout(net, "contiguous")
        reference = net(x)
        set_trunk_layout(net, "channels_last")
        out = net(x)
    assert out.is_contiguous() and _close(out, reference, 1e-5)


def test_layout_choice_by_option_device_and_torch_func():
    net = _trunk()
    x = torch.randn(1, 3, 32, 32)
    assert net.layout == "contiguous" and not net.channels_last_for(x)  # the default: OFA's layout
    set_trunk_layout(net, "auto")
    assert net.channels_last_for(x)
    seen = []
    torch.func.vmap(lambda row: seen.append(net.channels_last_for(row[None])) or row)(x)
    set_trunk_layout(net, "channels_last")
    torch.func.vmap(lambda row: seen.append(net.channels_last_for(row[None])) or row)(x)
    assert seen == [False, False] and net.channels_last_for(x)
    set_trunk_layout(net, "contiguous")
    assert not net.channels_last_for(x)


def test_one_by_one_convolution_as_matrix_product():
    conv = torch.nn.Conv2d(8, 5, 1, bias=True)
    x = torch.randn(2, 8, 6, 7).contiguous(memory_format=torch.channels_last)
    out = _conv(x, conv.weight, conv.bias, conv, (1, 1))
    assert torch.allclose(out, conv(x.contiguous()), atol=1e-6)
    assert out.stride(1) == 1  # stays channels-last


def test_unknown_trunk_layout_is_an_error():
    with pytest.raises(ValueError, match="unknown trunk layout 'nhwc'"):
        set_trunk_layout(_trunk(), "nhwc")
