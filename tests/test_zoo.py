"""The model zoo of the seeds (resarch.py, mobilenet.py, irnet_small.py) and its layer pieces.

Expected parameter counts are recomputed here from the papers' and official codes' layer tables,
independently of the model code, and anchored on published numbers where they exist (torchvision ResNet-18/34: 11,689,512 / 21,797,672; CIFAR ResNet-20: 269,722).
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from onebit.layers.activations import ChannelGate, LearnableBias, RPReLU, activation
from onebit.quant.scale import LearnedScale
from onebit.models import create_model, get_entry, list_models
from onebit.models.common import BinaryLayers
from onebit.models.mobilenet import MobileBlock
from onebit.models.resarch import STYLES, BasicBlock, ResArch
from onebit.quant import SteSign, get_method



pytestmark = pytest.mark.usefixtures("one_thread")

ZOO = [e.name for e in list_models()]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---- reference parameter counts, from the layer tables --------------------------------------------------

def conv(cin, cout, k, groups=1):
    return cin // groups * cout * k * k


def bn(c):
    return 2 * c


def fc(cin, n):
    return cin * n + n


def resnet_imagenet(depths, unit_extra, classes=1000, stem_extra=0, head_bn=False, widths=(64, 128, 256, 512)):
    """7x7 stem + BN, two 3x3 binary units per block, a real 1x1 conv + BN shortcut where the
    shape changes, FC. ``unit_extra(cin, cout, side)``: parameters around one 3x3 conv."""
    total = conv(3, 64, 7) + bn(64) + stem_extra + fc(widths[-1], classes) + (bn(widths[-1]) if head_bn else 0)
    cin, side = 64, 56
    for stage, (depth, width) in enumerate(zip(depths, widths)):
        side = side // 2 if stage else side
        for block in range(depth):
            if cin != width:
                total += conv(cin, width, 1) + bn(width)
            for unit_in in (cin, width):
                total += conv(unit_in, width, 3) + unit_extra(unit_in, width, side)
            cin = width
    return total


def mobilenet(blocks, classes, *, depthwise, rsign, stem=32):
    """ReActNet-A / RBNN's mobilenetv1_bireal: stem conv3x3 + BN; per block a 3x3 conv Cin->Cin
    (+BN), Cout/Cin pointwise convs Cin->Cin (+BN each); ReActNet adds two shifts (Cin each) and
    two RPReLUs (3 Cin + 3 Cout)."""
    total, cin = conv(3, stem, 3) + bn(stem), stem
    for cout, _ in blocks:
        k = cout // cin
        total += conv(cin, cin, 3, groups=cin if depthwise else 1) + bn(cin) + k * (conv(cin, cin, 1) + bn(cin))
        total += (2 * cin + 3 * cin + 3 * cout) if rsign else 0
        cin = cout
    return total + fc(cin, classes)


MOBILENET_CFG = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


def rbnn_mobilenet(width, depthwise):
    blocks = [(int(c * width), s) for c, s in MOBILENET_CFG[int(1 / width):]]
    return mobilenet(blocks, 10, depthwise=depthwise, rsign=False)


TORCHVISION_R18, TORCHVISION_R34 = 11_689_512, 21_797_672  # torchvision model docs ("11.7M", "21.8M")
EXPECTED = {
    # same convolutions and BatchNorms as torchvision's ResNets (one BN per 3x3 conv, 1x1 downsample + BN)
    "birealnet18": TORCHVISION_R18,
    "birealnet34": TORCHVISION_R34,
    # RBNN / IR-Net ImageNet files: + BatchNorm1d(512) before the FC
    "resnet34_1w1a": TORCHVISION_R34 + 1024,
    "irnet_r18": TORCHVISION_R18 + 1024,
    "irnet_r34": TORCHVISION_R34 + 1024,
    # ReActNet-18/34: + RSign shift (Cin) + RPReLU (3 Cout) per binary conv
    "reactnet_r18": resnet_imagenet((2, 2, 2, 2), lambda i, o, s: i + bn(o) + 3 * o),
    "reactnet_r34": resnet_imagenet((3, 4, 6, 3), lambda i, o, s: i + bn(o) + 3 * o),
    # R2B strong baseline: BN(Cin) before the sign, Gamma = C + H + W, PReLU(C) per conv; stem PReLU
    "strong_baseline": resnet_imagenet((2, 2, 2, 2), lambda i, o, s: bn(i) + (o + 2 * s) + o, stem_extra=64),
    # Tricks block: BN(Cin) -> sign -> conv -> PReLU(C); stem PReLU
    "resnet18_tricks": resnet_imagenet((2, 2, 2, 2), lambda i, o, s: bn(i) + o, stem_extra=64),
    "reactnet_a": mobilenet(MOBILENET_CFG, 1000, depthwise=False, rsign=True),
    # CIFAR ResNet-20 with option-A shortcuts (He et al.; RBNN's file docstring "0.27M") + BatchNorm1d(64)
    "resnet20_bireal_1w1a": 269_722 + 128,
    "mobilenetv1_bireal_025_1w1a": rbnn_mobilenet(0.25, True),
    "mobilenetv1_bireal_05_1w1a": rbnn_mobilenet(0.5, True),
    "mobilenetv1_bireal_025_noGroup_1w1a": rbnn_mobilenet(0.25, False),
    "mobilenetv1_bireal_05_noGroup_1w1a": rbnn_mobilenet(0.5, False),
    # our AlexNet widths 64-192-384-256-256, 3x3, FC from 256 x 4 x 4
    "alexnet_1w1a": sum(conv(i, o, 3) + bn(o) for i, o in [(3, 64), (64, 192), (192, 384), (384, 256), (256, 256)])
    + fc(256 * 16, 10),
    # MNIST: binary 1-32-64-128 convs, no BN, Linear(2048, 10)
    "irnet_mnist_1w1a": conv(1, 32, 3) + conv(32, 64, 3) + conv(64, 128, 3) + fc(2048, 10),
    # RBNN's CIFAR ResNet-20 (option-A shortcuts) and ResNet-18 (binary 1x1 shortcuts), BatchNorm1d heads
    "resnet20_1w1a": 269_722 + 128,
    "resnet18_1w1a": conv(3, 64, 3) + bn(64) + bn(512) + fc(512, 10) + sum(
        conv(i, o, 3) + bn(o) + conv(o, o, 3) + bn(o) + (conv(i, o, 1) + bn(o) if i != o else 0)
        for i, o in [(64, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]),
    # VGG-small: real conv0 3 -> 128, binary 128-128-256-256-512-512 with BN, Linear(512 x 4 x 4, 10)
    "vgg_small_1w1a": conv(3, 128, 3) + bn(128) + sum(
        conv(i, o, 3) + bn(o) for i, o in [(128, 128), (128, 256), (256, 256), (256, 512), (512, 512)]) + fc(8192, 10),
    # seed 003's fully binary networks: thermometer input (3 -> 9 channels), an offset (C) per BatchNorm,
    # a bias-free binary classifier and a fixed logit gain (not a parameter)
    "vgg_small_fb_1w1a": sum(conv(i, o, 3) + o for i, o in [(9, 128), (128, 128), (128, 256), (256, 256), (256, 512),
                                                           (512, 512)]) + 512 * 16 * 10,
    "alexnet_fb_1w1a": sum(conv(i, o, 3) + o for i, o in [(9, 64), (64, 192), (192, 384), (384, 256), (256, 256)])
    + 256 * 16 * 10,
    "resnet20_fb_1w1a": conv(9, 16, 3) + 16 + sum(
        conv(i, o, 3) + o + conv(o, o, 3) + o for i, o in [(16, 16)] * 3 + [(16, 32)] + [(32, 32)] * 2 + [(32, 64)]
        + [(64, 64)] * 2) + 64 * 10,
    # the digits CNN: real stem 3 -> 64, binary 64 -> 128 -> 128, BatchNorm1d(128 x 2 x 2), Linear(512, 10)
    "cnn_small_1w1a": conv(3, 64, 3) + bn(64) + conv(64, 128, 3) + bn(128) + conv(128, 128, 3) + bn(128)
    + bn(512) + fc(512, 10),
}


def build(name, **kwargs):
    entry = get_entry(name)
    kwargs.setdefault("num_classes", 1000 if entry.input_size >= 64 else 10)
    kwargs.setdefault("in_channels", 1 if "mnist" in name else 3)
    return create_model(name, kwargs.pop("num_classes"), method="bnn", **kwargs)


def reference(name):
    """The model at its reference size and class count, on the meta device (shapes only)."""
    with torch.device("meta"):
        return build(name)


def test_every_registered_model_has_an_expected_count():
    assert sorted(EXPECTED) == ZOO


@pytest.mark.parametrize("name", ZOO)
def test_parameter_counts_match_the_reference_definitions(name):
    assert n_params(reference(name)) == EXPECTED[name]


def test_resnet_anchors_are_torchvision_counts():
    assert n_params(torchvision.models.resnet18()) == TORCHVISION_R18
    assert n_params(torchvision.models.resnet34()) == TORCHVISION_R34
    bireal = lambda i, o, s: bn(o)  # noqa: E731
    assert resnet_imagenet((2, 2, 2, 2), bireal) == TORCHVISION_R18
    assert resnet_imagenet((3, 4, 6, 3), bireal) == TORCHVISION_R34


@pytest.mark.parametrize("name", ["reactnet_a", "reactnet_r18"])
def test_reactnet_models_with_their_method_have_one_shift_per_sign(name):
    """The reference: a learnable bias before a plain sign; the method adds no second threshold."""
    with torch.device("meta"):
        model = create_model(name, 1000)
    assert n_params(model) == EXPECTED[name]


def test_reactnet_a_count_and_published_size():
    # ReActNet-A's binary convolutions hold 28,253,184 weights (the ReActNet paper's table); with the FC ~29.3M
    assert EXPECTED["reactnet_a"] == pytest.approx(29.3e6, rel=2e-3)


@pytest.mark.parametrize("name", ZOO)
def test_stage1_and_stage2_models_have_identical_state_names_and_shapes(name):
    with torch.device("meta"):
        stage1 = build(name, binary_type=(True, False)).state_dict()
    stage2 = reference(name).state_dict()
    assert {k: v.shape for k, v in stage1.items()} == {k: v.shape for k, v in stage2.items()}


def test_rbnn_resnet18_picks_the_imagenet_definition_from_image_size():
    cifar = create_model("resnet18_1w1a", 10, method="bnn")
    tiny = create_model("resnet18_1w1a", 10, image_size=64, method="bnn")
    assert n_params(cifar) == EXPECTED["resnet18_1w1a"] == 11_174_986  # CIFAR file: 3x3 stem, binary 1x1 shortcuts
    assert n_params(tiny) == TORCHVISION_R18 + 1024 - fc(512, 1000) + fc(512, 10)
    assert isinstance(tiny, ResArch) and tiny.conv1.kernel_size == (7, 7)
    assert tiny(torch.randn(2, 3, 64, 64)).shape == (2, 10)


def test_strong_baseline_scales_are_sized_from_the_image_size():
    model = build("strong_baseline", image_size=64)  # 64 -> stem 16 -> stages 16, 8, 4, 2
    sides = [len(model.layer1[0].unit1.post.row), len(model.layer2[0].unit1.post.row),
             len(model.layer3[1].unit2.post.column), len(model.layer4[0].unit2.post.row)]
    assert sides == [16, 8, 4, 2]
    model(torch.randn(2, 3, 64, 64))
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(2, 3, 32, 32))


def test_strong_baseline_gate_option_uses_the_channel_gate():
    model = build("strong_baseline", gate=True, image_size=32)
    assert isinstance(model.layer2[0].unit1.post, ChannelGate)
    assert model.layer2[0].unit1.post.squeeze.in_features == 64  # the gate reads the real conv input
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


@pytest.mark.parametrize("kind,pool", [("conv", None), ("avgpool_conv", 0), ("conv_avgpool", 2), ("conv_avgpool3", 2)])
def test_downsample_options(kind, pool):
    model = build("birealnet18", downsample=kind, image_size=32)
    shortcut = model.layer2[0].shortcut
    pools = [i for i, m in enumerate(shortcut) if isinstance(m, nn.AvgPool2d)]
    assert pools == ([] if pool is None else [pool])
    conv1x1 = next(m for m in shortcut if isinstance(m, nn.Conv2d))
    assert conv1x1.stride == ((2, 2) if kind == "conv" else (1, 1))
    x = torch.randn(2, 64, 9, 9)  # odd side: every variant must give the strided conv's 5x5
    assert shortcut(x).shape == (2, 128, 5, 5) == model.layer2[0].unit1.conv(x).shape


def test_tricks_options_on_another_resnet():
    model = build("irnet_r18", style="tricks", double_skip=False, downsample="avgpool_conv", image_size=32)
    unit = model.layer2[0].unit1
    assert isinstance(unit.pre, nn.BatchNorm2d) and isinstance(unit.act, nn.PReLU) and not model.layer2[0].double_skip
    assert isinstance(model.layer2[0].shortcut[0], nn.AvgPool2d)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 1000)


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="downsample"):
        build("birealnet18", downsample="pool")
    with pytest.raises(ValueError, match="activation"):
        build("reactnet_r18", stem_act="gelu")
    with pytest.raises(ValueError, match="birealnet18' has no option 'widht'.*widths="):
        build("birealnet18", widht=2)
    with pytest.raises(ValueError, match="divisible by 8"):
        build("alexnet_1w1a", image_size=30)


def bnn_layers():
    return BinaryLayers("bnn")


@pytest.mark.parametrize("double_skip", [True, False])
@pytest.mark.parametrize("act_before_add", [True, False])
def test_tricks_block_wiring(double_skip, act_before_add):
    """Tricks block: y = conv(sign(BN x)); act(y + s) or act(y) + s; double skip or He's block."""
    torch.manual_seed(0)
    style = STYLES["tricks"].__class__(**{**STYLES["tricks"].__dict__, "act_before_add": act_before_add})
    block = BasicBlock(style, bnn_layers(), 8, 16, 2, 4, "conv_avgpool", double_skip).eval()
    for p in block.parameters():
        nn.init.uniform_(p, 0.2, 1.0)
    x = torch.randn(3, 8, 8, 8)
    u1, u2 = block.unit1, block.unit2

    def branch(u, t):
        w = torch.where(u.conv.weight >= 0, 1.0, -1.0)
        a = torch.where(u.pre(t) >= 0, 1.0, -1.0)
        return F.conv2d(a, w, None, u.conv.stride, 1)

    def combine(u, y, s):
        return F.prelu(y, u.act.weight) + s if act_before_add else F.prelu(y + s, u.act.weight)

    s = block.shortcut(x)
    if double_skip:
        mid = combine(u1, branch(u1, x), s)
        expected = combine(u2, branch(u2, mid), mid)
    else:
        mid = F.prelu(branch(u1, x), u1.act.weight)
        expected = combine(u2, branch(u2, mid), s)
    torch.testing.assert_close(block(x), expected)


def test_reactnet_a_block_duplicates_the_input_to_double_channels():
    """ReActNet-A: o_k = BN_k(conv1x1_k(sign(y + b21))) + y for k = 1, 2, concatenated, then RPReLU."""
    torch.manual_seed(0)
    block = MobileBlock(bnn_layers(), 4, 8, 2, rsign=True, act="rprelu", depthwise=False).eval()
    for p in block.parameters():
        nn.init.uniform_(p, -0.5, 0.5)
    x = torch.randn(2, 4, 6, 6)
    sign = lambda t: torch.where(t >= 0, 1.0, -1.0)  # noqa: E731
    b1, b2 = block.shift1.bias.view(1, -1, 1, 1), block.shift2.bias.view(1, -1, 1, 1)
    y = block.act1(block.bn1(F.conv2d(sign(x + b1), sign(block.conv3x3.weight), None, 2, 1)) + F.avg_pool2d(x, 2))
    halves = [bn(F.conv2d(sign(y + b2), sign(c.weight))) + y for c, bn in zip(block.pointwise, block.bn2)]
    expected = block.act2(torch.cat(halves, dim=1))
    torch.testing.assert_close(block(x), expected)
    assert block(x).shape == (2, 8, 3, 3)


def test_rbnn_mobilenet_uses_depthwise_unless_nogroup():
    grouped = reference("mobilenetv1_bireal_025_1w1a")
    full = reference("mobilenetv1_bireal_025_noGroup_1w1a")
    assert grouped.features[1].conv3x3.groups == 64 and full.features[1].conv3x3.groups == 1
    # width 0.25 drops the first four entries: 32 -> 64 (stride 1), then 64 -> 128 (stride 2) ...
    assert [(b.conv3x3.in_channels, b.conv3x3.stride[0]) for b in grouped.features][:3] == [(32, 1), (64, 2), (128, 1)]


def test_rbnn_init_and_head():
    model = build("resnet34_1w1a", widths=(8, 8, 16, 16))
    assert torch.all(model.layer1[0].unit1.post.weight == 1e-8)  # RBNN: BN gamma 1e-8
    assert isinstance(model.head_bn, nn.BatchNorm1d) and isinstance(model.stem_act, nn.Hardtanh)


# ---- layer pieces ------------------------------------------------------------------------------------

def test_rprelu_forward_and_gradients_match_the_closed_forms():
    torch.manual_seed(0)
    c = 5
    layer = RPReLU(c)
    assert torch.equal(layer.beta, torch.full((c,), 0.25)) and not layer.gamma.any() and not layer.zeta.any()
    with torch.no_grad():
        layer.gamma.uniform_(-0.5, 0.5)
        layer.beta.uniform_(0.1, 0.9)
        layer.zeta.uniform_(-0.5, 0.5)
    x = torch.randn(3, c, 4, 4)
    g = torch.randn(3, c, 4, 4)
    gamma, beta, zeta = (p.detach().view(1, c, 1, 1) for p in (layer.gamma, layer.beta, layer.zeta))
    above = (x > gamma).float()
    expected = above * (x - gamma + zeta) + (1 - above) * (beta * (x - gamma) + zeta)
    y = layer(x)
    torch.testing.assert_close(y, expected)
    (y * g).sum().backward()
    dims = (0, 2, 3)
    torch.testing.assert_close(layer.beta.grad, (g * (1 - above) * (x - gamma)).sum(dims))
    torch.testing.assert_close(layer.gamma.grad, (-g * (above + beta * (1 - above))).sum(dims))
    torch.testing.assert_close(layer.zeta.grad, g.sum(dims))


def test_learnable_bias_as_rsign_threshold_gradient():
    """sign(x + b) with a clipped STE: dL/db_c = sum_{n,h,w} g * 1[|x + b| <= 1] (ReActNet's shift)."""
    torch.manual_seed(0)
    shift, sign = LearnableBias(3), SteSign(clip=1.0)
    assert not shift.bias.any()
    with torch.no_grad():
        shift.bias.copy_(torch.tensor([0.3, -0.7, 0.0]))
    x, g = torch.randn(2, 3, 5, 5) * 1.5, torch.randn(2, 3, 5, 5)
    y = sign(shift(x))
    b = shift.bias.detach().view(1, 3, 1, 1)
    torch.testing.assert_close(y, torch.where(x + b >= 0, 1.0, -1.0))
    (y * g).sum().backward()
    torch.testing.assert_close(shift.bias.grad, (g * ((x + b).abs() <= 1).float()).sum((0, 2, 3)))


def test_learned_scale_and_channel_gate_formulas():
    torch.manual_seed(0)
    scale = LearnedScale(channels=3, size=(4, 5))  # standalone, sized from the output (R2B strong baseline)
    assert scale.channel.shape == (3, 1, 1) and scale.row.shape == (4, 1) and scale.column.shape == (5,)
    with torch.no_grad():
        for p in scale.parameters():
            p.uniform_(0.5, 1.5)
    x, g = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    (scale(x) * g).sum().backward()
    a, b, c = scale.channel.detach(), scale.row.detach(), scale.column.detach()
    torch.testing.assert_close(scale(x), x * a * b * c)
    torch.testing.assert_close(scale.channel.grad, (g * x * b * c).sum((0, 2, 3)).view(3, 1, 1))
    torch.testing.assert_close(scale.row.grad, (g * x * a * c).sum((0, 1, 3)).view(4, 1))
    with pytest.raises(ValueError, match="image_size"):
        scale(torch.randn(1, 3, 8, 8))

    gate = ChannelGate(16, 8)
    assert gate.squeeze.weight.shape == (2, 16) and gate.squeeze.bias is None
    y, a_real = torch.randn(2, 8, 3, 3), torch.randn(2, 16, 3, 3)
    hidden = torch.clamp(a_real.mean((2, 3)) @ gate.squeeze.weight.T, min=0)
    expected = y * torch.sigmoid(hidden @ gate.expand.weight.T)[:, :, None, None]
    torch.testing.assert_close(gate(y, a_real), expected)


def test_activation_names():
    assert isinstance(activation("prelu", 4), nn.PReLU) and isinstance(activation("none", 4), nn.Identity)
    with pytest.raises(ValueError, match="choose from"):
        activation("swish", 4)


@pytest.mark.parametrize("method", ["reactnet", "fda", "ienet", "rbnn"])
def test_mnist_net_builds_its_separate_sign_for_the_method(method):
    """The sign before the dropout and the real classifier is the method's, sized for the classifier."""
    model = create_model("irnet_mnist_1w1a", 10, in_channels=1, method=method)
    out = model(torch.randn(2, 1, 28, 28))
    out.sum().backward()
    assert out.shape == (2, 10) and model.sign.registered_name == get_method(method).input_quantizer.registered_name


@pytest.mark.parametrize("name", [e.name for e in list_models()])
def test_every_model_names_an_unknown_option(name):
    with pytest.raises(ValueError, match=f"model '{name}' has no option 'bogus'"):
        create_model(name, bogus=1)


def test_mnist_net_shapes_follow_ceil_pooling():
    model = reference("irnet_mnist_1w1a")
    assert model.fc.in_features == 128 * math.ceil(28 / 8) ** 2 == 2048
