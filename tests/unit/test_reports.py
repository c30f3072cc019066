"""The summaries: Markdown rows and the self-contained HTML page (report.py, html_report.py)."""
from __future__ import annotations

import re
from html.parser import HTMLParser

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
