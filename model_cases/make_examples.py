"""Build the bundled example models from code with fixed seeds: `python model_cases/make_examples.py [NAME ...]`.

The files are committed (a few hundred kB in all), so a fresh clone converts them offline
without running this; rerun it only after changing examples/architectures.py.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

EXAMPLES = Path(__file__).resolve().parent / "examples"
sys.path.insert(0, str(EXAMPLES))  # pickled classes must refer to `architectures`, as the harness imports it

import architectures as arch  # noqa: E402


def settle(model: torch.nn.Module, *example) -> torch.nn.Module:
    """BatchNorm statistics recalibrated on the harness's own sample distribution (N(0, 1) inputs
    of the example's shape; BatchNorm layers alone in training mode, no gradients), then frozen for
    inference. An untrained network with default statistics (mean 0, variance 1) hardly depends on
    its input, and then a numeric check against PyTorch proves nothing (the harness says so)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a cumulative average over every batch seen
        m.train()
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for _ in range(8):
            model(*[torch.randn(e.shape, generator=generator) if e.is_floating_point() else e for e in example])
    return model.eval()


def build_all(out: Path = EXAMPLES, only: set[str] | None = None) -> list[Path]:
    written = []

    def save(name: str, saver):
        path = out / name
        if only is None or Path(name).stem in only:  # rebuild some without touching the others' bytes
            saver(path)
            written.append(path)

    torch.manual_seed(0)
    img = torch.randn(1, 3, 32, 32)
    cnn = settle(arch.BatchNormCNN(), img)
    save("cnn_batchnorm.pt", lambda p: torch.jit.trace(cnn, img).save(str(p)))

    torch.manual_seed(1)
    dw = settle(arch.depthwise_net(width=16, classes=10), img)
    save("mobilenet_block.pt", lambda p: torch.save(dw.state_dict(), p))

    torch.manual_seed(2)
    res = settle(arch.TinyResNet(), img)
    save("resnet_tiny.pt2", lambda p: torch.export.save(torch.export.export(res, (img,)), str(p)))

    torch.manual_seed(3)
    seq = torch.randn(1, 16, 8)
    rnn = arch.RecurrentTagger().eval()
    save("lstm_gru_tagger.pt", lambda p: torch.jit.trace(rnn, seq).save(str(p)))

    torch.manual_seed(4)
    tr = arch.TinyTransformer().eval()
    save("transformer_encoder.pt", lambda p: torch.save(tr.state_dict(), p))

    torch.manual_seed(5)
    gelu = arch.GeluMLP().eval()
    save("gelu_mlp.pt", lambda p: torch.jit.trace(gelu, torch.randn(1, 32)).save(str(p)))

    torch.manual_seed(6)
    ids = torch.randint(0, 100, (1, 12))
    emb = arch.TokenClassifier().eval()
    save("token_classifier.pt", lambda p: torch.jit.trace(emb, ids).save(str(p)))

    torch.manual_seed(7)
    two = arch.TwoInTwoOut().eval()
    save("two_in_two_out.pt", lambda p: torch.jit.trace(two, (torch.randn(1, 3, 24, 24),
                                                              torch.randn(1, 6))).save(str(p)))

    torch.manual_seed(8)
    pool = arch.AdaptivePoolNet().eval()
    save("adaptive_pool.pt", lambda p: torch.save(pool.state_dict(), p))

    torch.manual_seed(9)
    clip = torch.randn(1, 3, 4, 16, 16)
    video = settle(arch.VideoNet(), clip)
    save("video_conv3d.pt", lambda p: torch.jit.trace(video, clip).save(str(p)))

    torch.manual_seed(10)
    mlp = arch.PickledMLP().eval()
    save("pickled_mlp.pt", lambda p: torch.save(mlp, p))
    save("untrusted_pickle.pt", lambda p: torch.save(mlp, p))

    # architectures that convert only with a known fix, which the harness applies by itself
    torch.manual_seed(11)
    convnext = arch.ConvNeXtBlockNet().eval()
    save("convnext_block.pt", lambda p: torch.jit.trace(convnext, torch.randn(1, 3, 32, 32)).save(str(p)))

    torch.manual_seed(12)
    bert = arch.BertStyleEncoder().eval()
    ids, mask = torch.randint(0, 100, (1, 12)), torch.ones(1, 12, dtype=torch.int64)
    save("bert_encoder.pt", lambda p: torch.jit.trace(bert, (ids, mask)).save(str(p)))

    torch.manual_seed(13)
    seg = settle(arch.SegmentationHead(), torch.randn(1, 3, 24, 24))
    save("segmentation_dict.pt",
         lambda p: torch.jit.trace(seg, torch.randn(1, 3, 24, 24), strict=False).save(str(p)))

    torch.manual_seed(14)
    det = arch.DetectionHeads().eval()
    save("detection_namedtuple.pt", lambda p: torch.save(det.state_dict(), p))

    torch.manual_seed(15)
    nested = arch.NestedOutputs().eval()
    save("nested_outputs.pt2",
         lambda p: torch.export.save(torch.export.export(nested, (torch.randn(1, 10),)), str(p)))

    torch.manual_seed(16)
    squeeze = arch.TinySqueezeNet().eval()
    save("squeezenet_tiny.pt2",
         lambda p: torch.export.save(torch.export.export(squeeze, (torch.randn(1, 3, 32, 32),)), str(p)))

    torch.manual_seed(17)
    diverging = arch.DivergingPoolNet().eval()
    save("diverging_pool.pt", lambda p: torch.save(diverging.state_dict(), p))

    # real architectures' patterns that need the graph prepared for onnx2tf (or its strict mode)
    image = torch.randn(1, 3, 32, 32)
    torch.manual_seed(18)
    scale = arch.LayerScaleConvNeXt().eval()
    save("layer_scale_convnext.pt", lambda p: torch.jit.trace(scale, image).save(str(p)))

    torch.manual_seed(19)
    patches = arch.PatchGroupNorm().eval()
    save("patch_group_norm.pt", lambda p: torch.jit.trace(patches, image).save(str(p)))

    torch.manual_seed(20)
    square = arch.SquareTokens().eval()
    save("square_tokens.pt", lambda p: torch.jit.trace(square, image).save(str(p)))

    torch.manual_seed(21)
    folded = arch.PatchGroupNorm(channels=16).eval()
    save("square_patches.pt", lambda p: torch.jit.trace(folded, image).save(str(p)))

    mean = arch.LargeMean().eval()
    save("large_mean.pt", lambda p: torch.jit.trace(mean, torch.randn(1, 1, 1024, 1024)).save(str(p)))

    # the deliverables beyond DRQ: a trained classifier for microcontrollers (int8 inputs and outputs,
    # calibrated on samples of its own data, generated here), and a model whose DRQ misses
    def classifier(p):
        model = arch.train_bar_classifier()
        image, _ = arch.bar_images(torch.Generator().manual_seed(23), 1)
        torch.jit.trace(model, image).save(str(p))
        samples = out / "int8_classifier_samples"
        samples.mkdir(exist_ok=True)
        images, _ = arch.bar_images(torch.Generator().manual_seed(24), 20)
        for i in range(len(images)):
            np.save(samples / f"sample_{i:02d}.npy", images[i:i + 1].numpy())

    save("int8_classifier.pt", classifier)
    torch.manual_seed(25)
    outliers = arch.OutlierMLP().eval()
    save("drq_outlier_mlp.pt", lambda p: torch.jit.trace(outliers, torch.randn(1, 32)).save(str(p)))
    # models onnx2tf's route fails on or gets wrong: engine = auto delivers them from the litert engine
    torch.manual_seed(27)
    stateful = arch.StatefulLSTM().eval()
    save("stateful_lstm.pt", lambda p: torch.save(stateful.state_dict(), p))
    torch.manual_seed(28)
    stn = arch.SpatialTransformer().eval()
    save("spatial_transformer.pt", lambda p: torch.save(stn.state_dict(), p))
    torch.manual_seed(29)
    bilstm = arch.BidirectionalLSTM().eval()
    window = torch.randn(1, 16, 9)
    save("bidirectional_lstm.pt", lambda p: torch.jit.trace(bilstm, window).save(str(p)))
    return written


if __name__ == "__main__":
    for path in build_all(only=set(sys.argv[1:]) or None):
        print(f"{path.relative_to(EXAMPLES.parent.parent)}  {path.stat().st_size / 1e3:.1f} kB")
