"""Reference CNNs as torchvision defines them (torchvision does not import beside our torch
build): MobileNet v1 (Howard et al. 2017, with ReLU6 and its classifier), MobileNet v2 (Sandler
et al. 2018, Table 2, width 1.0) and ResNet-18 (He et al. 2016), and a squeeze-and-excitation
block (Hu et al. 2018) as torchvision's MobileNet v3 writes it.

The tests check the plan against them (each builder takes ``width`` to shrink the channels
for fast tests); the benchmarks export them to ONNX. :func:`mobilenet_v1`,
:func:`mobilenet_v2` and :func:`resnet18` are factories for ``fastconv profile``
(``fastconv profile fastconv.bench.zoo:resnet18``): full width, batch norms given random
statistics (:func:`randomise`) so that folding them shows.
"""

from __future__ import annotations

import torch
from torch import nn


def randomise(module, seed=0, size=(32, 32)):
    """Batch norms whose affines are far from the identity and whose statistics are those of
    a random batch (so that activations neither vanish nor saturate through a deep network,
    and the output depends on the input), in eval mode."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    norms = [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in norms:
        m.weight.data.uniform_(0.5, 1.5, generator=g)
        m.bias.data.uniform_(-0.5, 0.5, generator=g)
        m.momentum = 1.0  # the statistics of the one calibration batch
    module.train()
    with torch.no_grad():
        module(torch.randn(4, 3, *size, generator=g))
    for m in norms:
        m.running_var.mul_(torch.empty_like(m.running_var).uniform_(0.8, 1.25, generator=g))
    return module.eval()


def _conv_bn(c_in, c_out, k, s, groups=1, act=nn.ReLU6):
    layers = [nn.Conv2d(c_in, c_out, k, s, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def _scaled(c, width):
    return max(8, int(c * width))


class MobileNetV1(nn.Module):
    """conv 3x3/2, 13 depthwise-separable blocks, average pool, classifier; ReLU6."""

    def __init__(self, width=1.0, classes=1000):
        super().__init__()
        c = [_scaled(v, width) for v in (32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512,
                                         512, 1024, 1024)]
        strides = (1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1)
        layers = [_conv_bn(3, c[0], 3, 2)]
        for c_in, c_out, s in zip(c, c[1:], strides):
            layers += [_conv_bn(c_in, c_in, 3, s, groups=c_in), _conv_bn(c_in, c_out, 1, 1)]
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c[-1], classes)

    def forward(self, x):
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class InvertedResidual(nn.Module):
    """torchvision's: expand 1x1 (unless t = 1), depthwise 3x3, project 1x1 (linear);
    the input added when the stride is 1 and the channels match."""

    def __init__(self, c_in, c_out, stride, expand):
        super().__init__()
        hidden = int(round(c_in * expand))
        self.use_res_connect = stride == 1 and c_in == c_out
        layers = [] if expand == 1 else [_conv_bn(c_in, hidden, 1, 1)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, c_out, 1, 1, 0, bias=False), nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


def _divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class MobileNetV2(nn.Module):
    """Table 2 of Sandler et al.: (t, c, n, s) rows, last conv 1280, dropout, classifier."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))

    def __init__(self, width=1.0, classes=1000):
        super().__init__()
        c_in = _divisible(32 * width)
        last = _divisible(1280 * max(1.0, width))
        features = [_conv_bn(3, c_in, 3, 2)]
        for t, c, n, s in self.SETTINGS:
            c_out = _divisible(c * width)
            for i in range(n):
                features.append(InvertedResidual(c_in, c_out, s if i == 0 else 1, t))
                c_in = c_out
        features.append(_conv_bn(c_in, last, 1, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        return self.classifier(torch.flatten(x, 1))


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet18(nn.Module):
    """conv 7x7/2, max pool 3x3/2, four stages of two basic blocks, average pool, fc."""

    def __init__(self, width=1.0, classes=1000):
        super().__init__()
        c = [_scaled(v, width) for v in (64, 128, 256, 512)]
        self.conv1 = nn.Conv2d(3, c[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(c[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages, c_in = [], c[0]
        for i, c_out in enumerate(c):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride),
                                        BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(c[-1], classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision's (MobileNet v3): average, 1x1 down with ReLU, 1x1 up, hard sigmoid,
    times the input; here after a conv and before a concatenation with a second branch."""

    def __init__(self, c=16, squeeze=8):
        super().__init__()
        self.conv = _conv_bn(3, c, 3, 1, act=nn.Hardswish)
        self.fc1 = nn.Conv2d(c, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, c, 1)
        self.branch = nn.Conv2d(3, 4, 3, 2, 1)
        self.pool = nn.MaxPool2d(2, 2)

    def forward(self, x):
        y = self.conv(x)
        scale = nn.functional.adaptive_avg_pool2d(y, 1)
        scale = nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(scale))))
        y = self.pool(y * scale)
        return torch.cat([y, torch.sigmoid(self.branch(x))], dim=1)


def mobilenet_v1() -> nn.Module:
    """MobileNet v1 1.0 (ReLU6, classifier), random weights, eval mode."""
    return randomise(MobileNetV1())


def mobilenet_v2() -> nn.Module:
    """MobileNet v2 1.0, random weights, eval mode."""
    return randomise(MobileNetV2())


def resnet18() -> nn.Module:
    """ResNet-18, random weights, eval mode."""
    return randomise(ResNet18())


# --- the CNN families users bring as ONNX files ----------------------------------------------
# Each as its reference implementation writes it (torchvision, Ultralytics, PaddleOCR's DBNet,
# the U-Net paper, CRNN), channels scaled by ``width`` for fast tests. None is trained here.


def _conv_bn_act(c_in, c_out, k, s=1, groups=1, act=None):
    """conv (no bias), batch norm, activation (a module, or None)."""
    layers = [nn.Conv2d(c_in, c_out, k, s, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, *([act] if act is not None else []))


class HardSwishOps(nn.Module):
    """HardSwish spelled as exporters of older frameworks write it: ``x * Clip(x + 3, 0, 6) /
    6`` (Add, Clip, Mul, Div in ONNX)."""

    def forward(self, x):
        return x * torch.clamp(x + 3, 0, 6) / 6


class HardSigmoidOps(nn.Module):
    """HardSigmoid as ``Clip(x + 3, 0, 6) / 6``."""

    def forward(self, x):
        return torch.clamp(x + 3, 0, 6) / 6


class SqueezeExcite(nn.Module):
    """torchvision's MobileNet v3 / EfficientNet block: average, 1x1 down, activation, 1x1
    up, gate, times the input."""

    def __init__(self, c, squeeze, act, gate):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.act, self.gate = act, gate

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class _MaybeResidual(nn.Module):
    """A block whose input is added to its output where the stride is 1 and the channels
    match (``self.residual``)."""

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class MobileNetV3Block(_MaybeResidual):
    """torchvision's InvertedResidual of MobileNet v3: expand, depthwise k x k, SE, project."""

    def __init__(self, c_in, k, expanded, c_out, se, hs, stride, spelled):
        super().__init__()
        act = (HardSwishOps() if spelled else nn.Hardswish()) if hs else nn.ReLU()
        gate = HardSigmoidOps() if spelled else nn.Hardsigmoid()
        layers = [] if expanded == c_in else [_conv_bn_act(c_in, expanded, 1, act=act)]
        layers.append(_conv_bn_act(expanded, expanded, k, stride, expanded, act))
        if se:
            layers.append(SqueezeExcite(expanded, _divisible(expanded // 4), nn.ReLU(), gate))
        layers.append(_conv_bn_act(expanded, c_out, 1))
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out


class MobileNetV3(nn.Module):
    """torchvision's MobileNet v3 (Howard et al. 2019, Tables 1 and 2), Small or Large.

    ``spelled=True`` writes HardSwish and HardSigmoid as Add/Clip/Mul/Div, as Paddle's and
    older exporters do. ``features_only`` returns the feature maps at strides 4, 8, 16, 32
    (the backbone of :class:`DBNet`)."""

    # (kernel, expanded, out, SE, HardSwish, stride) per block
    LARGE = ((3, 16, 16, 0, 0, 1), (3, 64, 24, 0, 0, 2), (3, 72, 24, 0, 0, 1),
             (5, 72, 40, 1, 0, 2), (5, 120, 40, 1, 0, 1), (5, 120, 40, 1, 0, 1),
             (3, 240, 80, 0, 1, 2), (3, 200, 80, 0, 1, 1), (3, 184, 80, 0, 1, 1),
             (3, 184, 80, 0, 1, 1), (3, 480, 112, 1, 1, 1), (3, 672, 112, 1, 1, 1),
             (5, 672, 160, 1, 1, 2), (5, 960, 160, 1, 1, 1), (5, 960, 160, 1, 1, 1))
    SMALL = ((3, 16, 16, 1, 0, 2), (3, 72, 24, 0, 0, 2), (3, 88, 24, 0, 0, 1),
             (5, 96, 40, 1, 1, 2), (5, 240, 40, 1, 1, 1), (5, 240, 40, 1, 1, 1),
             (5, 120, 48, 1, 1, 1), (5, 144, 48, 1, 1, 1), (5, 288, 96, 1, 1, 2),
             (5, 576, 96, 1, 1, 1), (5, 576, 96, 1, 1, 1))

    def __init__(self, size="large", width=1.0, classes=1000, spelled=False,
                 features_only=False):
        super().__init__()
        settings = self.LARGE if size == "large" else self.SMALL
        hs = HardSwishOps() if spelled else nn.Hardswish()
        c_in = _divisible(16 * width)
        self.stem = _conv_bn_act(3, c_in, 3, 2, act=hs)
        blocks, self.taps, stride = [], [], 2
        for k, e, c, se, h, s in settings:
            if s == 2 and stride >= 4:
                self.taps.append(len(blocks) - 1)  # the last block at the previous stride
            stride *= s
            c_out = _divisible(c * width)
            blocks.append(MobileNetV3Block(c_in, k, _divisible(e * width), c_out, se, h, s,
                                           spelled))
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.last = _conv_bn_act(c_in, 6 * c_in, 1, act=hs)
        self.taps.append(len(blocks))  # the last conv, at stride 32
        self.channels = [blocks[i].block[-1][0].out_channels for i in self.taps[:-1]] + [
            6 * c_in]
        self.features_only = features_only
        hidden = 1280 if size == "large" else 1024
        self.classifier = nn.Sequential(nn.Linear(6 * c_in, hidden), HardSwishOps() if spelled
                                        else nn.Hardswish(), nn.Dropout(0.2),
                                        nn.Linear(hidden, classes))

    def forward(self, x):
        x = self.stem(x)
        taps = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        x = self.last(x)
        if self.features_only:
            return [*taps, x]
        x = nn.functional.adaptive_avg_pool2d(x, 1)
        return self.classifier(torch.flatten(x, 1))


class MBConv(_MaybeResidual):
    """EfficientNet's block: expand 1x1, depthwise k x k, SE (SiLU, sigmoid), project; SiLU."""

    def __init__(self, c_in, c_out, k, stride, expand):
        super().__init__()
        hidden = c_in * expand
        layers = [] if expand == 1 else [_conv_bn_act(c_in, hidden, 1, act=nn.SiLU())]
        layers += [_conv_bn_act(hidden, hidden, k, stride, hidden, nn.SiLU()),
                   SqueezeExcite(hidden, max(1, c_in // 4), nn.SiLU(), nn.Sigmoid()),
                   _conv_bn_act(hidden, c_out, 1)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out


class EfficientNetB0(nn.Module):
    """torchvision's EfficientNet-B0 (Tan and Le 2019, Table 1)."""

    # (expand, channels, repeats, stride, kernel)
    STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3),
              (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))

    def __init__(self, width=1.0, classes=1000):
        super().__init__()
        c_in = _divisible(32 * width)
        layers = [_conv_bn_act(3, c_in, 3, 2, act=nn.SiLU())]
        for e, c, n, s, k in self.STAGES:
            c_out = _divisible(c * width)
            for i in range(n):
                layers.append(MBConv(c_in, c_out, k, s if i == 0 else 1, e))
                c_in = c_out
        last = _divisible(1280 * width)
        layers.append(_conv_bn_act(c_in, last, 1, act=nn.SiLU()))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _yolo_conv(c_in, c_out, k=1, s=1):
    return _conv_bn_act(c_in, c_out, k, s, act=nn.SiLU())


class Bottleneck(nn.Module):
    def __init__(self, c, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = _yolo_conv(c, c, 3), _yolo_conv(c, c, 3)
        self.add = shortcut

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """Ultralytics' C2f: 1x1, split in two, n bottlenecks on the second half, every output
    concatenated, 1x1."""

    def __init__(self, c_in, c_out, n=1, shortcut=False):
        super().__init__()
        self.c = c_out // 2
        self.cv1 = _yolo_conv(c_in, 2 * self.c)
        self.cv2 = _yolo_conv((2 + n) * self.c, c_out)
        self.m = nn.ModuleList(Bottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x):
        y = list(self.cv1(x).split((self.c, self.c), 1))
        y.extend(m(y[-1]) for m in self.m)
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    """Ultralytics' SPPF: 1x1, three chained 5x5 max pools, concatenated, 1x1."""

    def __init__(self, c_in, c_out, k=5):
        super().__init__()
        c = c_in // 2
        self.cv1, self.cv2 = _yolo_conv(c_in, c), _yolo_conv(4 * c, c_out)
        self.m = nn.MaxPool2d(k, 1, k // 2)

    def forward(self, x):
        y = [self.cv1(x)]
        y.extend(self.m(y[-1]) for _ in range(3))
        return self.cv2(torch.cat(y, 1))


class YOLOv8(nn.Module):
    """Ultralytics' YOLOv8 detector (the n scale at ``width=0.25``, depth 1/3): backbone of
    C2f and SPPF, a PAN neck (nearest x2 upsampling, concatenations), and the decoupled
    Detect head with its DFL (Reshape, Transpose, Softmax, a fixed 1x1 conv), boxes decoded
    against the anchors, classes through a sigmoid. Output (N, 4 + classes, anchors)."""

    def __init__(self, width=0.25, classes=80, reg_max=16):
        super().__init__()
        c = [int(v * width) for v in (64, 128, 256, 512, 1024)]
        self.backbone = nn.ModuleList([
            _yolo_conv(3, c[0], 3, 2), _yolo_conv(c[0], c[1], 3, 2), C2f(c[1], c[1], 1, True),
            _yolo_conv(c[1], c[2], 3, 2), C2f(c[2], c[2], 2, True),
            _yolo_conv(c[2], c[3], 3, 2), C2f(c[3], c[3], 2, True),
            _yolo_conv(c[3], c[4], 3, 2), C2f(c[4], c[4], 1, True), SPPF(c[4], c[4])])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1, self.n2 = C2f(c[4] + c[3], c[3]), C2f(c[3] + c[2], c[2])
        self.d1, self.n3 = _yolo_conv(c[2], c[2], 3, 2), C2f(c[2] + c[3], c[3])
        self.d2, self.n4 = _yolo_conv(c[3], c[3], 3, 2), C2f(c[3] + c[4], c[4])
        self.reg_max, self.classes = reg_max, classes
        levels = (c[2], c[3], c[4])
        c2, c3 = max(16, levels[0] // 4, reg_max * 4), max(levels[0], min(classes, 100))
        self.box = nn.ModuleList(nn.Sequential(_yolo_conv(x, c2, 3), _yolo_conv(c2, c2, 3),
                                               nn.Conv2d(c2, 4 * reg_max, 1)) for x in levels)
        self.cls = nn.ModuleList(nn.Sequential(_yolo_conv(x, c3, 3), _yolo_conv(c3, c3, 3),
                                               nn.Conv2d(c3, classes, 1)) for x in levels)
        self.dfl = nn.Conv2d(reg_max, 1, 1, bias=False).requires_grad_(False)
        self.dfl.weight.data[:] = torch.arange(reg_max, dtype=torch.float).view(1, reg_max, 1, 1)

    def forward(self, x):
        taps = []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in (4, 6):
                taps.append(x)
        p3, p4 = taps
        h4 = self.n1(torch.cat([self.up(x), p4], 1))
        h3 = self.n2(torch.cat([self.up(h4), p3], 1))
        h4 = self.n3(torch.cat([self.d1(h3), h4], 1))
        h5 = self.n4(torch.cat([self.d2(h4), x], 1))
        outs, anchors, strides = [], [], []
        for level, (f, stride) in enumerate(((h3, 8), (h4, 16), (h5, 32))):
            y = torch.cat([self.box[level](f), self.cls[level](f)], 1)
            n, _, h, w = y.shape
            outs.append(y.view(n, 4 * self.reg_max + self.classes, -1))
            sy, sx = torch.meshgrid(torch.arange(h, dtype=y.dtype) + 0.5,
                                    torch.arange(w, dtype=y.dtype) + 0.5, indexing="ij")
            anchors.append(torch.stack((sx, sy), -1).view(-1, 2))
            strides.append(torch.full((h * w, 1), stride, dtype=y.dtype))
        y = torch.cat(outs, 2)
        box, cls = y.split((4 * self.reg_max, self.classes), 1)
        n, _, a = box.shape
        dist = self.dfl(box.view(n, 4, self.reg_max, a).transpose(2, 1).softmax(1)).view(n, 4, a)
        anchor = torch.cat(anchors).transpose(0, 1).unsqueeze(0)
        lt, rb = dist.chunk(2, 1)
        xy = (anchor + (rb - lt) / 2) * torch.cat(strides).transpose(0, 1)
        wh = (lt + rb) * torch.cat(strides).transpose(0, 1)
        return torch.cat((xy, wh, cls.sigmoid()), 1)


class DBNet(nn.Module):
    """PaddleOCR's DBNet text detector: a MobileNet v3 (large) backbone's four feature maps,
    an FPN (1x1 in, nearest upsampling added top-down, 3x3 out, every level upsampled to
    stride 4 by nearest x2/x4/x8 and concatenated), and the DB head (3x3, BN, ReLU,
    ConvTranspose 2x2/2, BN, ReLU, ConvTranspose 2x2/2, sigmoid): the probability map at the
    input's size."""

    def __init__(self, width=0.5, inner=96):
        super().__init__()
        self.backbone = MobileNetV3("large", width, spelled=True, features_only=True)
        inner = max(8, int(inner * width))
        self.ins = nn.ModuleList(nn.Conv2d(c, inner, 1, bias=False)
                                 for c in self.backbone.channels)
        self.outs = nn.ModuleList(nn.Conv2d(inner, inner // 4, 3, padding=1, bias=False)
                                  for _ in self.backbone.channels)
        self.head = nn.Sequential(
            nn.Conv2d(inner, inner // 4, 3, padding=1, bias=False), nn.BatchNorm2d(inner // 4),
            nn.ReLU(), nn.ConvTranspose2d(inner // 4, inner // 4, 2, 2),
            nn.BatchNorm2d(inner // 4), nn.ReLU(), nn.ConvTranspose2d(inner // 4, 1, 2, 2),
            nn.Sigmoid())

    def forward(self, x):
        c2, c3, c4, c5 = [f(t) for f, t in zip(self.ins, self.backbone(x))]
        up = nn.functional.interpolate
        p4 = c4 + up(c5, scale_factor=2, mode="nearest")
        p3 = c3 + up(p4, scale_factor=2, mode="nearest")
        p2 = c2 + up(p3, scale_factor=2, mode="nearest")
        p5, p4, p3, p2 = (f(t) for f, t in zip(self.outs[::-1], (c5, p4, p3, p2)))
        fused = torch.cat([up(p5, scale_factor=8, mode="nearest"),
                           up(p4, scale_factor=4, mode="nearest"),
                           up(p3, scale_factor=2, mode="nearest"), p2], 1)
        return self.head(fused)


class UNet(nn.Module):
    """Ronneberger et al.'s U-Net (padded 3x3 convs with BN and ReLU, as most ports write it):
    four 2x2 max-pool downs, ups by ConvTranspose 2x2/2 (``up="transpose"``) or bilinear
    upsampling with ``align_corners`` True or False, each resized to its skip's size (a
    Resize whose size the graph computes from the input's shape), skips concatenated; a 1x1
    to ``classes``."""

    def __init__(self, width=0.125, classes=2, up="transpose"):
        super().__init__()
        c = [max(4, int(v * width)) for v in (64, 128, 256, 512, 1024)]

        def double(c_in, c_out):
            return nn.Sequential(_conv_bn_act(c_in, c_out, 3, act=nn.ReLU()),
                                 _conv_bn_act(c_out, c_out, 3, act=nn.ReLU()))

        self.downs = nn.ModuleList([double(3, c[0])] + [double(a, b) for a, b in zip(c, c[1:])])
        self.mode = up
        if up == "transpose":
            self.ups = nn.ModuleList(nn.ConvTranspose2d(b, a, 2, 2) for a, b in zip(c, c[1:]))
        else:
            self.ups = nn.ModuleList(nn.Conv2d(b, a, 1) for a, b in zip(c, c[1:]))
        self.merges = nn.ModuleList(double(2 * a, a) for a in c[:-1])
        self.last = nn.Conv2d(c[0], classes, 1)

    def forward(self, x):
        skips = []
        for i, down in enumerate(self.downs):
            x = down(x if i == 0 else nn.functional.max_pool2d(x, 2))
            skips.append(x)
        x = skips.pop()
        for up, merge in zip(self.ups[::-1], self.merges[::-1]):
            skip = skips.pop()
            if self.mode == "transpose":
                x = up(x)
            else:
                x = up(nn.functional.interpolate(x, scale_factor=2, mode="bilinear",
                                                 align_corners=self.mode == "align_corners"))
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = merge(torch.cat([skip, x], 1))
        return self.last(x)


class CRNN(nn.Module):
    """Shi et al.'s CRNN text recogniser, small: conv, BN, ReLU and max pools down to a
    height of 1, the columns as a sequence, a bidirectional LSTM, a classifier per column.
    Input (N, 1 or 3, 32, W); output (W / 4, N, classes)."""

    def __init__(self, channels=3, classes=37, width=0.25, hidden=32):
        super().__init__()
        c = [max(8, int(v * width)) for v in (64, 128, 256, 256, 512)]
        self.cnn = nn.Sequential(
            _conv_bn_act(channels, c[0], 3, act=nn.ReLU()), nn.MaxPool2d(2, 2),
            _conv_bn_act(c[0], c[1], 3, act=nn.ReLU()), nn.MaxPool2d(2, 2),
            _conv_bn_act(c[1], c[2], 3, act=nn.ReLU()), _conv_bn_act(c[2], c[3], 3, act=nn.ReLU()),
            nn.MaxPool2d((2, 1), (2, 1)), _conv_bn_act(c[3], c[4], 3, act=nn.ReLU()),
            nn.MaxPool2d((2, 1), (2, 1)), _conv_bn_act(c[4], c[4], 3, act=nn.ReLU()),
            nn.MaxPool2d((2, 1), (2, 1)))
        self.rnn = nn.LSTM(c[4], hidden, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        f = self.cnn(x)  # (N, C, 1, W / 4)
        seq = f.squeeze(2).permute(2, 0, 1)  # (T, N, C)
        out, _ = self.rnn(seq)
        return self.fc(out)


def mobilenet_v3_large() -> nn.Module:
    """MobileNet v3 Large 1.0, random weights, eval mode (``fastconv profile
    fastconv.bench.zoo:mobilenet_v3_large``)."""
    return randomise(MobileNetV3("large"))


def mobilenet_v3_small() -> nn.Module:
    """MobileNet v3 Small 1.0, random weights, eval mode."""
    return randomise(MobileNetV3("small"))


def efficientnet_b0() -> nn.Module:
    """EfficientNet-B0, random weights, eval mode (the statistics of a batch at 224: at a
    smaller size its activations grow without bound, and sigmoid gates of huge values give
    denormals, which a benchmark should not measure)."""
    return randomise(EfficientNetB0(), size=(224, 224))


def yolov8n() -> nn.Module:
    """The YOLOv8n-style detector (80 classes), random weights, eval mode; its input's sides
    multiples of 32 (``--input-shape 3,320,320`` or ``3,640,640``)."""
    return randomise(YOLOv8(0.25), size=(320, 320))


def dbnet() -> nn.Module:
    """The DBNet-style text detector (MobileNet v3 Large 0.5 backbone), random weights, eval
    mode; its input's sides multiples of 32 (``--input-shape 3,640,640``)."""
    return randomise(DBNet(0.5), size=(640, 640))


def unet() -> nn.Module:
    """The U-Net (a quarter of the paper's channels, ConvTranspose ups), random weights, eval
    mode (``--input-shape 3,256,256``)."""
    return randomise(UNet(0.25), size=(256, 256))
