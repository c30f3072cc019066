"""Architectures of the bundled example models (small, CPU-friendly, built from code).

The state_dict example names its factory here (`architectures:depthwise_net`), and the
pickled example's class lives here: the harness imports both with this folder on sys.path.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
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


# --- architectures that need a known fix, applied automatically ----------------------------

class ConvNeXtBlockNet(nn.Module):
    """ConvNeXt-style: patchify stem, depthwise 7x7 conv, LayerNorm over channels, an inverted
    MLP with exact GELU (Erf, which TFLite builtins lack), layer scale and a residual."""

    def __init__(self, dim: int = 16, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))
        self.head_norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.dwconv(x).permute(0, 2, 3, 1)  # to channels-last for LayerNorm and the MLP
        y = self.gamma * self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        x = x + y.permute(0, 3, 1, 2)
        return self.head(self.head_norm(x.mean((2, 3))))


class BertStyleEncoder(nn.Module):
    """BERT-style: token + position embeddings, LayerNorm, self-attention with an additive
    attention mask from int64 0/1 values, an exact-GELU feed-forward; returns the hidden states
    and a tanh pooler output, as BertModel does."""

    def __init__(self, vocab: int = 100, dim: int = 32, heads: int = 4, layers: int = 2, length: int = 12):
        super().__init__()
        self.heads = heads
        self.tokens = nn.Embedding(vocab, dim)
        self.positions = nn.Embedding(length, dim)
        self.register_buffer("position_ids", torch.arange(length).unsqueeze(0), persistent=False)
        self.embed_norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList(nn.ModuleDict({
            "qkv": nn.Linear(dim, 3 * dim), "out": nn.Linear(dim, dim), "norm1": nn.LayerNorm(dim, eps=1e-12),
            "ff1": nn.Linear(dim, 4 * dim), "ff2": nn.Linear(4 * dim, dim), "norm2": nn.LayerNorm(dim, eps=1e-12),
        }) for _ in range(layers))
        self.pooler = nn.Linear(dim, dim)

    def forward(self, input_ids, attention_mask):
        b, n = input_ids.shape
        h = self.embed_norm(self.tokens(input_ids) + self.positions(self.position_ids[:, :n]))
        bias = (1.0 - attention_mask[:, None, None, :].to(h.dtype)) * -10000.0
        d = h.shape[-1] // self.heads
        for layer in self.layers:
            q, k, v = layer["qkv"](h).split(h.shape[-1], dim=-1)
            q, k, v = (t.reshape(b, n, self.heads, d).transpose(1, 2) for t in (q, k, v))
            attn = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5 + bias, dim=-1)
            context = (attn @ v).transpose(1, 2).reshape(b, n, -1)
            h = layer["norm1"](h + layer["out"](context))
            h = layer["norm2"](h + layer["ff2"](nn.functional.gelu(layer["ff1"](h))))
        return h, torch.tanh(self.pooler(h[:, 0]))


class SegmentationHead(nn.Module):
    """Segmentation model that returns a dict, as torchvision's do: {"out": ..., "aux": ...}."""

    def __init__(self, classes: int = 5):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, padding=1), nn.ReLU())
        self.classifier = nn.Conv2d(16, classes, 1)
        self.aux_classifier = nn.Conv2d(16, classes, 3, padding=1)

    def forward(self, x):
        features = self.backbone(x)
        return {"out": self.classifier(features), "aux": self.aux_classifier(features)}


Detections = __import__("collections").namedtuple("Detections", ["scores", "boxes"])


class DetectionHeads(nn.Module):
    """Returns a namedtuple, as many detection and multi-task models do."""

    def __init__(self, classes: int = 6):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 12, 3, stride=2, padding=1), nn.ReLU())
        self.scores = nn.Linear(12, classes)
        self.boxes = nn.Linear(12, 4)

    def forward(self, x):
        pooled = self.features(x).mean((2, 3))
        return Detections(torch.softmax(self.scores(pooled), -1), torch.sigmoid(self.boxes(pooled)))


class NestedOutputs(nn.Module):
    """Returns nested tuples: ((embedding, logits), confidence)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(10, 16), nn.ReLU())
        self.logits = nn.Linear(16, 3)
        self.confidence = nn.Linear(16, 1)

    def forward(self, x):
        h = self.body(x)
        return (h, self.logits(h)), torch.sigmoid(self.confidence(h))


class Fire(nn.Module):
    def __init__(self, cin: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, squeeze, 1)
        self.expand1 = nn.Conv2d(squeeze, expand, 1)
        self.expand3 = nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x):
        s = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1(s)), torch.relu(self.expand3(s))], 1)


class TinySqueezeNet(nn.Module):
    """SqueezeNet-style Fire modules and a global AdaptiveAvgPool2d(1): saved as a .pt2, the
    dynamo exporter cannot bring it down to opset 17 (its ReduceMean)."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
                                      Fire(16, 8, 16), Fire(32, 8, 16))
        self.classifier = nn.Sequential(nn.Conv2d(32, classes, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))

    def forward(self, x):
        return torch.flatten(self.classifier(self.features(x)), 1)


class DivergingPoolNet(nn.Module):
    """Conv(3->4) -> AdaptiveAvgPool2d((7, 7)) on 20x20 -> flatten: onnx2tf converts it without a
    word, wrongly (float32 TFLite cosine far below 1). An expected failure whose message names
    the first ONNX node whose TF output diverges."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d((7, 7))
        self.head = nn.Linear(4 * 7 * 7, 5)

    def forward(self, x):
        return self.head(torch.flatten(self.pool(self.conv(x)), 1))


# --- real architectures' patterns that onnx2tf's non-strict mode converts wrongly unless the
# harness rewrites the graph first (converter/stages/graph.py), or chooses strict mode

class LayerScaleConvNeXt(nn.Module):
    """torchvision's ConvNeXt block: the layer scale, shaped (C, 1, 1), multiplies *after* the
    permute back to channels-first (the original ConvNeXt applies a (C,) gamma before it, as
    ConvNeXtBlockNet does). Without the layer_scale rewrite onnx2tf's non-strict mode fails:
    'Dimensions must be equal, but are 8 and 32'."""

    def __init__(self, dim: int = 32, classes: int = 10):
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1, self.pwconv2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.layer_scale = nn.Parameter(torch.rand(dim, 1, 1) + 0.5)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.stem(x)
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(nn.functional.gelu(self.pwconv1(self.norm(y)), approximate="tanh")).permute(0, 3, 1, 2)
        return self.head((x + self.layer_scale * y).mean((2, 3)))


class PatchGroupNorm(nn.Module):
    """MobileViT-v2's separable-attention input: the feature map unfolded into patches, normalised
    by GroupNorm(1, C) (written to ONNX as Reshape -> InstanceNormalization), folded back. Without
    the group_norm rewrite onnx2tf's non-strict mode normalises over the wrong axis (float32 error
    0.43 of the output range). With `channels` equal to the folded map's side (16 on 32x32), the
    folded-back map reads the same in both layouts: a case only onnx2tf's strict mode converts."""

    def __init__(self, channels: int = 24, patch: int = 2, classes: int = 10):
        super().__init__()
        self.patch = patch
        self.stem = nn.Conv2d(3, channels, 3, 2, 1)
        self.norm = nn.GroupNorm(1, channels)
        self.proj = nn.Conv2d(channels, channels, 1)
        self.norm2 = nn.GroupNorm(1, channels)
        self.head = nn.Linear(channels, classes)

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        p = self.patch
        patches = x.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 3, 5, 2, 4).reshape(b, c, p * p, -1)
        y = self.norm2(self.proj(self.norm(patches)))
        y = y.reshape(b, c, p, p, h // p, w // p).permute(0, 1, 4, 2, 5, 3).reshape(b, c, h, w)
        return self.head((x + y).mean((2, 3)))


class SquareTokens(nn.Module):
    """SegFormer's sequence reduction: a strided conv leaves as many tokens as channels (8x8 = 64
    tokens of 64 channels), which go through LayerNorm and a linear layer. On that square [1, 64, 64]
    tensor onnx2tf's non-strict mode cannot tell tokens from channels: the harness chooses its strict
    mode before the first run (and writes the token/image views as 4-D transposes)."""

    def __init__(self, dim: int = 64, classes: int = 10):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, stride=4)
        self.norm = nn.LayerNorm(dim)
        self.fc = nn.Linear(dim, dim)
        self.out = nn.Conv2d(dim, dim, 1)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.embed(x)
        b, c, h, w = x.shape
        tokens = self.fc(self.norm(x.flatten(2).transpose(1, 2)))
        y = tokens.transpose(1, 2).reshape(b, c, h, w)
        return self.head(self.out(y).mean((2, 3)))


class LargeMean(nn.Module):
    """The mean of a million values near 1000, less 1000: TFLite's MEAN kernel sums float32 values one
    by one and loses the small part (9.6 where PyTorch's pairwise sum gives 0.002), while onnx2tf's
    TF model gets it right. No conversion setting repairs a runtime kernel: an expected failure, whose
    diagnosis names the TFLite op."""

    def forward(self, x):
        return (x * 2.0 + 1000.0).mean((2, 3)) - 1000.0


def bar_images(generator: torch.Generator, n: int, size: int = 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Images of one bright bar (horizontal, vertical, or either diagonal) on noise: a task a small
    CNN learns in seconds, so the int8 example is a trained model with real calibration samples."""
    images = torch.randn(n, 3, size, size, generator=generator) * 0.3
    labels = torch.randint(0, 4, (n,), generator=generator)
    c = size // 2
    for i, label in enumerate(labels.tolist()):
        if label == 0:
            images[i, :, c - 1:c + 2, 2:-2] += 2.0
        elif label == 1:
            images[i, :, 2:-2, c - 1:c + 2] += 2.0
        else:
            for k in range(2, size - 2):
                j = k if label == 2 else size - 1 - k
                images[i, :, k, max(0, j - 1):j + 2] += 2.0
    return images, labels


class BarClassifier(nn.Module):
    """A small trained CNN (conv, BatchNorm, ReLU, pooling, a linear head) for the int8 recipes."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.head = nn.Linear(64, classes)

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def train_bar_classifier(steps: int = 200) -> BarClassifier:
    torch.manual_seed(22)
    model = BarClassifier()
    generator = torch.Generator().manual_seed(22)
    optimiser = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(steps):
        x, y = bar_images(generator, 32)
        loss = nn.functional.cross_entropy(model(x), y)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


class OutlierMLP(nn.Module):
    """An MLP with one large weight in each layer, as fine-tuned networks sometimes have: DRQ's
    per-tensor int8 grid, stretched to reach it, rounds every other weight coarsely and misses its
    tolerance, while float16 keeps them. Its chain ["drq", "fp16"] delivers fp16, saying why."""

    def __init__(self, outlier: float = 40.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 8))
        with torch.no_grad():
            for layer in (self.net[0], self.net[2], self.net[4]):
                layer.weight[0, 0] = outlier

    def forward(self, x):
        return self.net(x)


class StatefulLSTM(nn.Module):
    """A stacked LSTM stepped with its state passed in and returned ([time, batch, features]
    input; h and c of [layers, batch, hidden]), as a streaming model runs it."""

    def __init__(self, features: int = 8, hidden: int = 16, layers: int = 3, outputs: int = 4):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, layers)
        self.fc = nn.Linear(hidden, outputs)

    def forward(self, x, h, c):
        y, (h, c) = self.lstm(x, (h, c))
        return self.fc(y), h, c


class BidirectionalLSTM(nn.Module):
    """An activity classifier: two bidirectional LSTM layers over a window of sensor readings
    ([batch, time, features]), the last step's features classified."""

    def __init__(self, features: int = 9, hidden: int = 8, layers: int = 2, classes: int = 6):
        super().__init__()
        self.lstm = nn.LSTM(features, hidden, layers, batch_first=True, bidirectional=True)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        return self.fc(self.lstm(x)[0][:, -1])


class SpatialTransformer(nn.Module):
    """A spatial transformer: a localisation head predicts an affine transform, affine_grid and
    grid_sample resample the image with it, a linear layer classifies the result."""

    def __init__(self, side: int = 28, classes: int = 10):
        super().__init__()
        self.loc = nn.Sequential(nn.Flatten(), nn.Linear(side * side, 32), nn.Tanh(), nn.Linear(32, 6))
        self.fc = nn.Linear(side * side, classes)
        with torch.no_grad():  # near the identity transform, as a spatial transformer starts training
            self.loc[3].weight.mul_(0.1)
            self.loc[3].bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]))

    def forward(self, x):
        theta = self.loc(x).view(-1, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return self.fc(F.grid_sample(x, grid, align_corners=False).flatten(1))
