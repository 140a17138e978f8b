"""report.html and compare.html: self-contained pages (inline data and script, no request), checked as files and in a
real headless Chromium: the plot and tables render, the lineage browser filters and searches, markup in the data
stays text, and a screenshot is taken."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from conftest import SEED_ROWS, TEST_ROWS, write_jsonl
from llm2llm import report, report_html
from llm2llm.cli import app
from llm2llm.compare import Method, compare
from llm2llm.config import load_config
from llm2llm.data import read_jsonl
from llm2llm.loop import run

from browser import page_for
from scripted import LookupStudent, ScriptedStudent, ScriptedTeacher

# A seed whose text is markup: it must show as text, and must not end the page's data block.
HOSTILE = "</script><script>window.pwned = 1</script> <b>bold</b> & <!-- reboot --> my modem"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A three-iteration out-of-fold run with the scripted teacher (accepted and rejected replies, a verifier), written
    with its report."""
    root = tmp_path_factory.mktemp("html")
    seeds = write_jsonl(root / "seeds.jsonl", SEED_ROWS + [{"text": HOSTILE, "label": "technical"}])
    test = write_jsonl(root / "test.jsonl", TEST_ROWS)
    config = load_config(None, [f"data.seed_path={seeds}", f"data.test_path={test}", f"output_dir={root / 'runs'}", "name=html",
                                "teacher.type=scripted:ScriptedTeacher", "teacher.samples_per_wrong=2", "loop.iterations=3",
                                "select.by=out_of_fold", "select.folds=2", "eval.test_every_iteration=true"])
    student = LookupStudent(knows={SEED_ROWS[0]["text"], TEST_ROWS[0]["text"]})
    student.gold[HOSTILE] = "technical"
    ScriptedTeacher.calls = []
    store = run(config, student=student)
    report.write(store)
    return store


def _payload(page: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S).group(1))


def test_the_page_is_one_self_contained_file(finished):
    page = (finished.root / "report.html").read_text(encoding="utf-8")
    assert page.count("<script") == 2 and "<link" not in page and " src=" not in page  # inline data and script only
    assert set(re.findall(r"https?://[^\s\"')]+", page)) == {"http://www.w3.org/2000/svg"}  # a namespace name, never fetched
    assert "default-src 'none'" in page  # and the browser is told to fetch nothing
    assert HOSTILE not in page and "</script><script>window" not in page  # the seed's markup cannot end the data block
    data = _payload(page)
    assert data == {"kind": "run", **json.loads(json.dumps(report_html.run_data(finished)))}
    assert [a["iteration"] for a in data["accuracy"]] == [0, 1, 2]
    assert all(a["oof"] is not None and a["test"] is not None for a in data["accuracy"])
    # The lineage holds every reply of every generating iteration: accepted ones and rejected ones with their reason.
    replies = [c for p in data["lineage"] for c in p["children"]]
    generated = sum(len(read_jsonl(finished.root / f"iter_{i:03d}" / "generated.jsonl")) for i in (0, 1))
    rejected = [r for i in (0, 1) for r in read_jsonl(finished.root / f"iter_{i:03d}" / "rejected.jsonl")]
    assert sum(c["outcome"] == "accepted" for c in replies) == generated
    assert sorted(c["outcome"] for c in replies if c["outcome"] != "accepted") == sorted(r["reason"] for r in rejected)
    assert {p["iteration"] for p in data["lineage"]} == {0, 1}  # the last iteration writes nothing
    mismatch = next(c for c in replies if c["outcome"] == "label_mismatch")
    assert mismatch["verifier"] and mismatch["verifier"] != mismatch["label"]  # the verifier's own answer


def test_the_report_renders_filters_and_searches_in_chromium(finished, tmp_path):
    data = _payload((finished.root / "report.html").read_text(encoding="utf-8"))
    with page_for(finished.root / "report.html", tmp_path / "profile") as (page, requests, errors):
        assert page.locator("h1").inner_text() == "html"
        # The plot: one line per accuracy, a point per iteration, the best iteration marked.
        for series in ("seed", "oof", "test"):
            assert page.locator(f"#accuracy-chart g[data-series={series}] .point").count() == 3
            assert page.locator(f"#accuracy-chart g[data-series={series}] path.line").count() == 1
        assert page.locator("#accuracy-chart .best-line").count() == 1
        assert page.locator("#accuracy-chart").bounding_box()["height"] > 150
        # The tables: one row per iteration; one per label, switched between seed, out-of-fold and test accuracy.
        assert page.locator("#iterations-table tbody tr").count() == 3
        assert page.locator("#per-label-table tbody tr").count() == 3
        page.get_by_role("button", name="out-of-fold").click()
        assert page.locator("button.on").inner_text() == "out-of-fold"

        cards = page.locator("#lineage .parent")
        total = len(data["lineage"])
        assert cards.count() == total and f"{total} of {total} seed examples" in page.locator("#lineage-count").inner_text()
        page.select_option("#filter-label", "billing")
        billing = sum(p["label"] == "billing" for p in data["lineage"])
        assert 0 < cards.count() == billing < total
        assert set(cards.evaluate_all("cards => cards.map(c => c.dataset.label)")) == {"billing"}
        page.select_option("#filter-label", "")
        page.select_option("#filter-outcome", "accepted")
        assert set(page.locator("#lineage .child").evaluate_all("items => items.map(i => i.dataset.outcome)")) == {"accepted"}
        page.select_option("#filter-outcome", "")
        page.select_option("#filter-iteration", "1")
        assert set(cards.evaluate_all("cards => cards.map(c => c.dataset.iteration)")) == {"1"}
        page.select_option("#filter-iteration", "")

        page.fill("#search", "wrong address")
        assert cards.count() >= 1 and all("wrong address" in text.lower() for text in cards.all_inner_texts())
        assert page.locator("#lineage mark").first.inner_text().lower() == "wrong address"
        page.fill("#search", "window.pwned")  # the hostile seed: found, shown as text, never run
        assert cards.count() >= 1 and all(HOSTILE in text for text in cards.all_inner_texts())
        assert page.evaluate("window.pwned") is None and page.locator("#lineage b").count() == 0
        page.fill("#search", "no text has this")
        assert cards.count() == 0 and page.get_by_text("Nothing matches these filters.").is_visible()
        page.fill("#search", "")

        shot = tmp_path / "report.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        assert errors == []
        assert requests == [(finished.root / "report.html").resolve().as_uri()]  # nothing else was fetched


def test_the_compare_page_renders_in_chromium(tmp_path, data_files):
    seeds, test = data_files
    config = tmp_path / "cmp.yaml"
    config.write_text(json.dumps({"name": "cmp", "output_dir": str(tmp_path / "runs"), "loop": {"iterations": 2},
                                  "data": {"seed_path": str(seeds), "test_path": str(test)},
                                  "teacher": {"type": "scripted:ScriptedTeacher"}}))

    def run_one(settings):
        store = run(settings, student=ScriptedStudent({SEED_ROWS[0]["text"], TEST_ROWS[1]["text"]}))
        report.write(store)
        return store

    compare(config, [], [Method.parse("finetune"), Method.parse("llm2llm")], 2, run_one)
    page_file = tmp_path / "runs" / "cmp" / "compare.html"
    page_file.unlink()
    result = CliRunner().invoke(app, ["report", str(page_file.parent)])  # `report` on a comparison writes its page again
    assert result.exit_code == 0 and page_file.is_file(), result.output
    with page_for(page_file, tmp_path / "profile") as (page, requests, errors):
        assert page.locator("#compare-chart .bar").count() == 2
        assert page.locator("#compare-table tbody tr").count() == 2
        links = page.locator("#runs-table a")
        assert links.count() == 4  # a report per run, linked relative to the comparison
        for href in links.evaluate_all("links => links.map(a => a.getAttribute('href'))"):
            assert (page_file.parent / href).is_file()
        assert errors == [] and requests == [page_file.resolve().as_uri()]
