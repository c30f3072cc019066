"""Architectures of the bundled example models (small, CPU-friendly, built from code).

The state_dict example names its factory here (`architectures:depthwise_net`), and the
pickled example's class lives here: the harness imports both with this folder on sys.path.
"""
from __future__ import annotations

import torch
from torch import nn


class BatchNormCNN(nn.Module):
    """Image classifier: conv + BatchNorm + ReLU blocks, global pooling, linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        )
        self.head = nn.Linear(32, classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
        nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU6(),
    )


class DepthwiseNet(nn.Module):
    """MobileNet-like: depthwise-separable blocks."""

    def __init__(self, width: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU6())
        self.blocks = nn.Sequential(_separable(width, width * 2, 1), _separable(width * 2, width * 4, 2),
                                    _separable(width * 4, width * 4, 1))
        self.head = nn.Linear(width * 4, classes)

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def depthwise_net(width: int = 16, classes: int = 10) -> DepthwiseNet:
    return DepthwiseNet(width, classes)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.down(x))


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(self.layers(self.stem(x)).mean((2, 3)))


class RecurrentTagger(nn.Module):
    """Sequence model: LSTM then GRU over [batch, time, features], a score per step."""

    def __init__(self, features: int = 8, hidden: int = 16, tags: int = 4):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, batch_first=True)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.out = nn.Linear(hidden, tags)

    def forward(self, x):
        y, _ = self.lstm(x)
        y, _ = self.gru(y)
        return self.out(y)


class TinyTransformer(nn.Module):
    """Transformer encoder (self-attention + MLP) over [batch, tokens, d_model]."""

    def __init__(self, d_model: int = 32, heads: int = 4, layers: int = 2):
        super().__init__()
        layer = nn.TransformerEncoderLayer(d_model, heads, dim_feedforward=64, dropout=0.0,
                                           activation="relu", batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(self, x):
        return self.norm(self.encoder(x))


class GeluMLP(nn.Module):
    """Exact (erf) GELU, which TFLite builtins lack unless onnx2tf rewrites Erf."""

    def __init__(self, features: int = 32, hidden: int = 64):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(features, hidden), nn.Linear(hidden, features)
        self.act = nn.GELU()

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class TokenClassifier(nn.Module):
    """int64 token ids -> embedding -> mean pooling -> class scores."""

    def __init__(self, vocab: int = 100, dim: int = 16, classes: int = 5):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, tokens):
        return self.head(self.embed(tokens).mean(1))


class TwoInTwoOut(nn.Module):
    """An image and a vector in; class scores and a regression vector out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.meta = nn.Linear(6, 8)
        self.cls = nn.Linear(16, 3)
        self.reg = nn.Linear(16, 2)

    def forward(self, image, meta):
        h = torch.cat([torch.relu(self.conv(image)).mean((2, 3)), torch.relu(self.meta(meta))], 1)
        return self.cls(h), self.reg(h)


class AdaptivePoolNet(nn.Module):
    """AdaptiveAvgPool2d((7, 7)) on a 20x20 map: 7 does not divide 20 (legacy export refuses)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.head = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


class VideoNet(nn.Module):
    """5-D NCDHW input (clips of frames) through Conv3d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm3d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3, 4)))


class PickledMLP(nn.Module):
    """Saved as a whole pickled module (torch.save(model)), loadable only when trusted."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 3))

    def forward(self, x):
        return torch.softmax(self.net(x), dim=-1)
