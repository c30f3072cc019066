"""The verdict of an output's declared task, and the tensor check of an undeclared one, on hand-built
arrays (tasks.py, metrics.judge_outputs)."""
from __future__ import annotations

import numpy as np
import pytest

from converter.failures import ConversionError, FailureKind
from converter.metrics import compare, judge_outputs
from converter.spec import ModelSpec, SpecError, load_spec
from converter.task_spec import check_task
from converter.tasks import judge

from ..support import write

CLASSIFICATION = {"task": "classification"}


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_a_flipped_top1_fails_and_agreeing_logits_pass_whatever_their_error():
    reference = np.array([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0]])
    flipped = judge(CLASSIFICATION, "logits", reference, np.array([[1.0, 2.0, 0.0], [0.0, 3.0, 1.0]]), 0.05)
    assert (flipped.units, flipped.agree, flipped.flipped, flipped.allowed) == (2, 1, 1, 0) and not flipped.passed
    # off by 20 % of the range, every answer the same: a classifier's file that does its job
    far = judge(CLASSIFICATION, "logits", reference, reference + np.array([[0.0, 0.6, 0.0], [0.6, 0.0, 0.0]]), 0.05)
    assert far.passed and far.agree == 2
    assert "classification: 2/2 rows agree (top-1 class), 0 clear flips <= 0 allowed" in far.describe()


def test_a_near_tie_may_go_either_way_and_is_counted():
    reference = np.array([[1.0, 0.99, -2.0]])  # top two 0.01 apart: within twice 0.05 of the range 3
    check = judge(CLASSIFICATION, "logits", reference, np.array([[0.98, 1.0, -2.0]]), 0.05)
    assert check.passed and (check.near_ties, check.flipped) == (1, 0)
    assert "1 near ties differ" in check.describe()
    assert not judge(CLASSIFICATION, "logits", reference, np.array([[0.98, 1.0, -2.0]]), 0.001).passed


def test_top_k_judges_the_set_of_classes_not_their_order():
    reference = np.array([[5.0, 4.0, 3.0, 0.0, -1.0]])
    reordered = np.array([[3.0, 5.0, 4.0, 0.0, -1.0]])
    assert judge({"task": "classification", "top_k": 3}, "y", reference, reordered, 0.01).passed
    assert not judge({"task": "classification", "top_k": 1}, "y", reference, reordered, 0.01).passed
    swapped_in = np.array([[5.0, 4.0, -1.0, 0.0, 3.0]])
    assert not judge({"task": "classification", "top_k": 3}, "y", reference, swapped_in, 0.01).passed


def test_an_rnet_like_file_that_changes_face_decisions_is_refused_declared_or_not():
    """Eight inputs of [1, 2] face/no-face probabilities; the quantized file changes two decisions."""
    rng = np.random.default_rng(0)
    reference = softmax(rng.normal(0, 3, (8, 2)), 1)
    candidate = reference.copy()
    clear = np.argsort(-np.abs(reference[:, 0] - 0.5))[:2]  # the two clearest decisions, turned over
    candidate[clear] = candidate[clear][:, ::-1]
    declared = compare("prob", reference, candidate, 0.1, samples=8, task=CLASSIFICATION, outlier_share=1e-4)
    assert not declared.passed and declared.task.flipped == 2
    assert "judged by its task, classification: 6/8 rows agree" in declared.brief("int8 TFLite")
    assert "over 8 inputs" in declared.brief("int8 TFLite")
    undeclared = compare("prob", reference, candidate, 0.1, samples=8, outlier_share=1e-4)
    assert undeclared.outliers == 0 and not undeclared.passed  # 16 elements allow no outlier


def yolo_like(rng):
    """A detector's head [1, 84, 2100] (176 400 elements): boxes spanning ~640 px, scores in [0, 1]."""
    boxes = rng.uniform(0, 640, (1, 4, 2100))
    scores = 1 / (1 + np.exp(-rng.normal(-4, 2, (1, 80, 2100))))
    return np.concatenate([boxes, scores], axis=1)


def test_four_elements_of_176400_off_with_cosine_one_pass_an_undeclared_quantized_check_not_float32():
    rng = np.random.default_rng(1)
    reference = yolo_like(rng)
    candidate = reference + rng.normal(0, 1e-4, reference.shape)
    span = np.ptp(reference)
    for k in range(4):
        candidate[0, k, 7 + k] += 0.0118 * span
    fp16 = compare("output0", reference, candidate, 0.01, outlier_share=1e-4)
    assert fp16.mismatched == 4 and fp16.outliers == 17 and fp16.cosine > 0.99999
    assert fp16.range_rel_err > 0.01 and fp16.passed
    assert "4/176400 elements off over 1 input, up to 17 allowed" in fp16.brief("float16 TFLite")
    (judged,) = judge_outputs(ModelSpec(model_id="m", path="m.pt"), "fp16", ["output0"], [reference], [candidate],
                              samples=1)
    assert judged.passed and judged.channel_off == 4  # channel by channel too: the same four, allowed
    fp32 = compare("output0", reference, candidate, 0.01)
    assert not fp32.passed and fp32.outliers == 0
    candidate[0, 10:30, 50] += 0.02 * span  # twenty elements off: more than the allowance
    assert not compare("output0", reference, candidate, 0.01, outlier_share=1e-4).passed
    candidate = reference.copy()
    candidate[0, 5, 5] = np.nan  # a non-finite element is never an allowed outlier
    assert not compare("output0", reference, candidate, 0.01, outlier_share=1e-4).passed


def test_a_dense_map_allows_a_few_clear_flips_among_many_positions_and_no_more():
    rng = np.random.default_rng(2)
    reference = softmax(rng.normal(0, 2, (4, 2, 30, 30)), 1)  # a P-Net-like face/no-face map, 3600 positions
    dense = {"task": "dense"}
    positions = reference.transpose(0, 2, 3, 1).reshape(-1, 2)
    clear = np.flatnonzero(np.abs(positions[:, 0] - positions[:, 1]) > 0.5)

    def flipped(count):
        moved = positions.copy()
        moved[clear[:count]] = moved[clear[:count]][:, ::-1]
        return moved.reshape(4, 30, 30, 2).transpose(0, 3, 1, 2)

    few = judge(dense, "prob", reference, flipped(18), 0.1)  # 0.5 % of the positions
    assert few.units == 3600 and few.flipped == 18 and few.allowed == 36 and few.passed
    assert not judge(dense, "prob", reference, flipped(400), 0.1).passed  # 11 %: R-Net-like damage
    # a one-channel score map is thresholded: at 0.5 for scores within [0, 1]
    scores = reference[:, :1]
    check = judge(dense, "score", scores, 1 - scores, 0.1)
    assert check.detail == "score above 0.5" and not check.passed


def test_an_embedding_must_point_the_same_way_for_every_input():
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(8, 64))
    close = reference + rng.normal(0, 0.02, reference.shape)
    check = judge({"task": "embedding"}, "emb", reference, close, 0.05)
    assert check.passed and check.min_cosine > 0.99 and check.units == 8
    turned = close.copy()
    turned[3] = rng.normal(size=64)  # one input's embedding points elsewhere
    bad = judge({"task": "embedding"}, "emb", reference, turned, 0.05)
    assert not bad.passed and bad.flipped == 1 and bad.min_cosine < 0.5
    assert "worst cosine" in bad.describe()
    assert judge({"task": "embedding", "min_cosine": 0.2}, "emb", reference, close * 3, 0.05).passed  # scale is free


def test_detections_are_the_same_anchors_classes_and_overlapping_boxes():
    reference = np.zeros((1, 4 + 2, 5))
    reference[0, :4] = [[10, 50, 90, 130, 170], [10, 10, 10, 10, 10], [8, 8, 8, 8, 8], [8, 8, 8, 8, 8]]
    reference[0, 4:] = [[0.9, 0.05, 0.6, 0.26, 0.0], [0.05, 0.8, 0.1, 0.0, 0.0]]  # 4 anchors detect
    detection = {"task": "detection"}
    same = judge(detection, "head", reference, reference + 0.01, 0.05)
    assert same.passed and same.units == 5 and same.detected == 4 and same.near_ties == 0
    assert same.allowed == 0  # 1 % of the 4 detections, not of the 5 anchors (most of a real head's detect nothing)
    lost = reference.copy()
    lost[0, 4, 0] = 0.1  # a clear detection gone
    assert not judge(detection, "head", reference, lost, 0.05).passed
    moved = reference.copy()
    moved[0, 0, 1] += 6  # its box shifted by 6 of 8 px: IoU 0.14
    assert not judge(detection, "head", reference, moved, 0.05).passed
    relabelled = reference.copy()
    relabelled[0, 4:, 1] = [0.8, 0.05]  # the same box, another class
    assert not judge(detection, "head", reference, relabelled, 0.05).passed
    borderline = reference.copy()
    borderline[0, 4, 3] = 0.24  # 0.26 -> 0.24 at the 0.25 threshold: a near tie
    check = judge(detection, "head", reference, borderline, 0.05)
    assert check.passed and check.near_ties == 1


def test_an_output_whose_shape_its_task_cannot_read_is_a_spec_error_in_one_line():
    with pytest.raises(ConversionError) as info:
        compare("boxes", np.zeros((1, 3, 10)), np.zeros((1, 3, 10)), 0.1, task={"task": "detection"})
    assert info.value.kind is FailureKind.SPEC_ERROR and "a detection needs 4 box coordinates" in info.value.message
    with pytest.raises(ConversionError, match="has no axis 3"):
        compare("y", np.zeros((2, 4)), np.zeros((2, 4)), 0.1, task={"task": "dense", "axis": 3})


def test_a_float32_file_keeps_the_strict_tensor_check_a_quantized_one_is_judged_by_its_task(tmp_path):
    spec = ModelSpec(model_id="m", path="m.pt", task=CLASSIFICATION)
    reference = np.array([[4.0, 1.0, 0.0]])
    candidate = reference + [[0.0, 0.5, 0.0]]  # 12 % of the range off, the same answer
    (drq,) = judge_outputs(spec, "drq", ["logits"], [reference], [candidate], samples=1)
    assert drq.passed and drq.task is not None and drq.range_rel_err > 0.1
    (fp32,) = judge_outputs(spec, "fp32", ["logits"], [reference], [candidate], samples=1)
    assert not fp32.passed and fp32.task is None
    assert judge({"task": "regression"}, "y", reference, candidate, 0.05) is None  # the tensor check


def test_tasks_in_sidecars_per_model_and_per_output(tmp_path):
    model = write(tmp_path / "m.pt")
    write(tmp_path / "m.toml", 'task = "classification"\n[outputs.emb]\ntask = "embedding"\nmin_cosine = 0.95\n'
                               "[[inputs]]\nshape = [1, 4]\n")
    spec = load_spec(model, "m")
    assert spec.task_for("logits") == {"task": "classification"}
    assert spec.task_for("emb") == {"task": "embedding", "min_cosine": 0.95}
    assert type(spec).from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("toml, key, words", [
    ('task = "segmentation"\n', "task", "task must be one of classification, dense, embedding, detection, "
                                        "regression, not 'segmentation'"),
    ("task = 3\n", "task", "must name a task"),
    ('[outputs.y]\ntask = "embedding"\ntop_k = 3\n', "outputs", "y: task 'embedding' takes no top_k"),
    ('[outputs.y]\nthreshold = 0.5\n', "outputs", "y: needs a task"),
    ('[outputs.y]\ntask = "detection"\niou = 2.0\n', "outputs", "iou must be in (0, 1]"),
    ('[outputs.y]\ntask = "detection"\nbox_format = "xywh"\n', "outputs", "box_format must be one of cxcywh, xyxy"),
    ('[outputs.y]\ntask = "classification"\ntop_k = 0\n', "outputs", "top_k must be at least 1"),
    ('[outputs.y]\ntask = "dense"\ncolour = 1\n', "outputs", "unknown key(s) colour"),
])
def test_an_unknown_task_or_option_is_one_line_naming_file_and_key(tmp_path, toml, key, words):
    model = write(tmp_path / "m.pt")
    side = write(tmp_path / "m.toml", toml + "[[inputs]]\nshape = [1]\n")
    with pytest.raises(SpecError) as info:
        load_spec(model, "m")
    assert info.value.where == str(side) and info.value.key == key and words in str(info.value)
    assert "\n" not in str(info.value)


def test_check_task_reads_a_name_or_a_table():
    assert check_task("dense") == {"task": "dense"}
    assert check_task({"task": "dense", "threshold": 0}) == {"task": "dense", "threshold": 0.0}


def test_an_outputs_table_that_names_no_output_is_a_spec_error_before_anything_is_judged():
    spec = ModelSpec(model_id="m", path="m.pt", outputs={"logit": {"task": "classification"}})
    with pytest.raises(ConversionError) as info:
        judge_outputs(spec, "drq", ["logits", "boxes"], [np.zeros((1, 3))] * 2, [np.zeros((1, 3))] * 2, samples=1)
    assert info.value.kind is FailureKind.SPEC_ERROR
    assert info.value.message == "[outputs.logit] names no output of the model (its outputs: logits, boxes)"


def test_an_undeclared_detector_head_whose_scores_broke_under_one_shared_grid_is_refused_channel_by_channel():
    """What benchmarks/recipe_defaults.py found: an int8 file of a grid detector [N, 4 + 2, 36] whose
    boxes (0..24 px) and scores (0..1) share one int8 grid raised every score to 0.36 or more, so every
    anchor detects, while the whole tensor is within 0.072 of its range (tolerance 0.1)."""
    rng = np.random.default_rng(4)
    reference = np.concatenate([rng.uniform(0, 24, (8, 4, 36)), rng.uniform(0, 0.05, (8, 2, 36))], axis=1)
    reference[:, 4, 0] = 0.95  # one detection per image
    broken = reference.copy()
    broken[:, 4:] = np.maximum(broken[:, 4:], 0.363)
    spec = ModelSpec(model_id="m", path="m.pt")
    (undeclared,) = judge_outputs(spec, "int8", ["head"], [reference], [broken], samples=8)
    assert undeclared.range_rel_err < 0.1 and undeclared.mismatched == 0  # one range hides it
    assert undeclared.channel_err > 3 and not undeclared.passed
    assert "but channel 5 along axis 1 is off by" in undeclared.brief("int8 TFLite")  # a score channel
    (detection,) = judge_outputs(ModelSpec(model_id="m", path="m.pt", task={"task": "detection"}), "int8", ["head"],
                                 [reference], [broken], samples=8)
    assert not detection.passed and detection.task.flipped == 8 * 35  # every empty anchor now detects
    (regression,) = judge_outputs(ModelSpec(model_id="m", path="m.pt", task={"task": "regression"}), "int8",
                                  ["head"], [reference], [broken], samples=8)
    assert regression.passed and regression.channel_err is None  # the whole tensor only, as declared
    fine = reference + rng.normal(0, 1e-4, reference.shape)
    (good,) = judge_outputs(spec, "int8", ["head"], [reference], [fine], samples=8)
    assert good.passed and good.channel_err < 0.01
