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
