"""The summaries: Markdown rows and the self-contained HTML page (report.py, html_report.py)."""
from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from converter.html_report import render

from .. import builders


def test_a_model_name_with_a_newline_or_a_pipe_keeps_its_summary_row_whole():
    from converter.report import summary_markdown

    records = {name: builders.record(model_id=name) for name in ("two\nlines", "a|b", "plain")}
    table = [ln for ln in summary_markdown(records, {}).splitlines() if ln.startswith("|")]
    columns = table[0].count("|")
    assert len(table) == 2 + 3 and all(ln.count("|") - ln.count("\\|") == columns for ln in table), table


def test_html_report_is_self_contained_and_well_formed():
    records = {"good": builders.record(model_id="good"), "bad": builders.record("failed", "crash", "x <y>", model_id="bad")}
    gate = {"labels": {"good": "=", "bad": "PASS->FAILED (crash)"}, "marks": {"bad": "regression"},
            "lines": [{"severity": "regression", "text": "REGRESSION bad: ..."}]}
    page = render(records, {"torch": "2.13.0"}, gate)

    class Check(HTMLParser):
        tags, external = [], []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)
            self.external += [v for k, v in attrs if k in ("src", "href") and v and "//" in v]

    parser = Check()
    parser.feed(page)
    assert parser.external == [] and "script" not in parser.tags
    assert parser.tags.count("svg") == 4 and "x &lt;y&gt;" in page
    assert page.index("<code>bad</code>") < page.index("<code>good</code>")  # failures come first
    assert len(re.findall(r'class="[^"]*\bregress\b', page)) == 2  # the model's cell and the verdict line


def _file(recipe: str, size: int, err: float, tolerance: float, **fields):
    from converter.checks import OutputComparison
    from converter.results import Deliverable

    return Deliverable(recipe, f"model_{recipe}.tflite", size, (OutputComparison(
        "output_0", (1, 8), (1, 8), err * 2, err, 2.0, err, 0.999, None, 0, 8, tolerance),), **fields)


def _rows(page: str) -> dict[str, str]:
    return {re.search(r"<code>(.*?)</code>", tr).group(1).replace("<wbr>", ""): tr
            for tr in re.findall(r"<tr style=.*?</tr>", page, re.S)}


def test_a_regressed_model_is_no_green_passed_row_and_the_headline_counts_it():
    from converter.html_report import OUTCOME_COLOURS

    records = {m: builders.record(model_id=m) for m in ("steady", "worse")}
    gate = {"labels": {"steady": "=", "worse": "DRQ error x3.1"}, "marks": {"worse": "regression"},
            "lines": [{"severity": "regression", "text": "REGRESSION worse: DRQ error grew x3.1"}]}
    page = render(records, {}, gate)
    rows = _rows(page)
    assert OUTCOME_COLOURS["passed"] in rows["steady"] and OUTCOME_COLOURS["passed"] not in rows["worse"]
    assert "<td>passed</td>" in rows["steady"] and "<td>passed</td>" not in rows["worse"]
    assert "regressed" in rows["worse"]
    assert re.search(r"<p>2 models: [^<]*1 regressed against the baseline", page), page[:1500]


def test_the_size_chart_draws_a_file_larger_than_onnx_larger_and_says_how_much():
    import dataclasses

    from converter.html_report import size_chart

    record = dataclasses.replace(builders.record(), deliverables=(
        _file("drq", 47_400, 1e-3, 0.05), _file("fp16", 10_000, 1e-4, 0.01)))  # ONNX: 20 kB
    svg = size_chart(record)
    widths = {title.split(" ")[0]: float(width) for width, title in
              re.findall(r'<rect [^>]*width="([\d.]+)"[^>]*><title>([^<]*)</title>', svg)}
    assert widths["DRQ"] > 2.3 * widths["ONNX"] and widths["float16"] == pytest.approx(widths["ONNX"] / 2, abs=1)
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "237%" in texts and "50%" in texts and "100%" in texts


def test_each_recipe_is_drawn_against_its_own_tolerance_and_a_miss_says_so():
    import dataclasses

    from converter.html_report import error_chart

    record = dataclasses.replace(builders.record(), delivered="fp16", requested=("drq", "fp16"), deliverables=(
        _file("drq", 5_000, 0.083, 0.05), _file("fp16", 10_000, 0.004, 0.01)))
    svg = error_chart(record)
    assert "<title>DRQ TFLite tolerance 0.05</title>" in svg and "<title>float16 TFLite tolerance 0.01</title>" in svg
    texts = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    assert "0.083 &gt; 0.05" in texts and "0.004" in texts, texts
    assert re.search(r'<text[^>]*class="miss"[^>]*>0.083', svg)


def test_every_chart_carries_its_numbers():
    from converter.html_report import error_chart, size_chart, time_chart

    record = builders.record()
    for svg in (size_chart(record), error_chart(record), time_chart({"load": 3.0, "savedmodel": 113.4}, 200.0)):
        assert re.search(r"<text[^>]*>[^<]*\d", svg), svg
    assert ">116 s<" in time_chart({"load": 3.0, "savedmodel": 113.4}, 200.0)


def test_the_page_names_each_files_device_the_micro_arena_and_whether_int8_saw_real_samples():
    import dataclasses

    from converter.checks import MicroCheck, RuntimeCheck
    from converter.recipes import RECIPES
    from converter.results import TFLiteResult

    micro = RuntimeCheck(True, kernels_agree=True, micro=MicroCheck(True, arena_bytes=14_672, agrees=True))
    real = dataclasses.replace(builders.record(model_id="real"), delivered="int8_io", requested=("int8_io",),
                               deliverables=(_file("int8_io", 30_000, 0.004, 0.1, runtime=micro),),
                               tflite=TFLiteResult((), 0.3, "16 samples from samples (4 held out for verification)"))
    guessed = dataclasses.replace(real, model_id="guessed", tflite=TFLiteResult(
        (), 0.3, "32 random samples from the input spec", random_calibration=True))
    page = render({"real": real, "guessed": guessed, "phone": builders.record(model_id="phone")}, {})
    rows = _rows(page)
    assert RECIPES["int8_io"].device in rows["real"] and RECIPES["drq"].device in rows["phone"]
    assert "14.7 kB" in rows["real"] and "14,672" in page
    assert "your samples" in rows["real"] and "random" in rows["guessed"] and "random" not in rows["phone"]
    for recipe in RECIPES.values():  # the legend says what each colour is and where it goes
        assert f"</span>{recipe.label}: {recipe.device}" in page
