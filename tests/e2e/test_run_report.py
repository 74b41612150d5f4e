"""What a person reads after the end-to-end runs: the console, the HTML report, the model card.

All from the session's two pipeline runs (tests/e2e/conftest.py); no run of their own.
"""

from __future__ import annotations

import base64
import html.parser
import io
import json
import re
import subprocess
from pathlib import Path

import pytest

from components.versioned_pusher.model_card import CARD_PATH
from pipeline import pipeline as pipeline_ids
from pipeline.run_summary import list_run_ids, open_store, summarize_run
from tests.e2e.conftest import PIPELINE_NAME

pytestmark = pytest.mark.slow

# TensorFlow's C++ logging (absl C++ and the older TF format), e.g.
# "W0000 00:00:1796143662.455040   23959 op_level_cost_estimator.cc:699] Error in ..." and
# "2026-12-01 16:48:04.136647: W tensorflow/core/framework/local_rendezvous.cc:404] ...".
CPP_LOG_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d|\.(cc|h):\d+\] ")
MAX_CONSOLE_LINES = 80


class _Page(html.parser.HTMLParser):
    """The report's image sources and its visible text."""

    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])

    def handle_data(self, data):
        self.text.append(data)


def _report_path(console: str) -> Path:
    [line] = [line for line in console.splitlines() if line.startswith("report: ")]
    return Path(line[len("report: ") :])


def _summaries(pipeline_runs):
    store = open_store(str(pipeline_runs.metadata_path), read_only=True)
    return [summarize_run(store, PIPELINE_NAME, run_id) for run_id in list_run_ids(store)]


def _page(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_console_is_short_shows_each_component_and_no_cpp_logging(pipeline_runs):
    for console in (pipeline_runs.first_run_log, pipeline_runs.second_run_log):
        lines = console.splitlines()
        assert len(lines) < MAX_CONSOLE_LINES, console
        assert not [line for line in lines if CPP_LOG_LINE.search(line)], console
        for component in (pipeline_ids.EXAMPLE_GEN, pipeline_ids.TRAINER, pipeline_ids.PUSHER):
            assert sum(line.endswith(f" {component} ...") for line in lines) == 1, console
            assert sum(f" {component} done in " in line for line in lines) == 1, console
    first = pipeline_runs.first_run_log
    assert re.search(r"Trainer done in .*: \d+ epochs \(\d phases\), best eval accuracy", first)
    assert "Evaluator done in " in first and ": blessed: accuracy " in first
    assert re.search(r"Pusher done in .*: pushed version 1 to ", first)
    assert re.search(r"phase1 epoch 1/\d+: loss ", first)  # one line per epoch off a terminal
    second = pipeline_runs.second_run_log
    assert "NOT blessed" in second and "against served version 1" in second
    assert "not pushed: the Evaluator did not bless it" in second


def test_report_images_are_pngs_and_its_numbers_are_the_runs(pipeline_runs):
    from PIL import Image

    for summary, console in zip(
        _summaries(pipeline_runs), (pipeline_runs.first_run_log, pipeline_runs.second_run_log)
    ):
        path = _report_path(console)
        page = _page(path)
        text = " ".join(page.text)
        assert len(page.images) >= 6, path  # data, samples, curves, confusion, calibration...
        for source in page.images:
            assert source.startswith("data:image/png;base64,")
            data = base64.b64decode(source.split(",", 1)[1], validate=True)
            assert data.startswith(b"\x89PNG\r\n\x1a\n")
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
                assert image.format == "PNG" and min(image.size) > 0
        # The Evaluator's numbers, as the report prints them (4 decimals).
        for name, value in summary.metrics.items():
            assert f"{name} {value:.4f}" in text, name
        for name, m in summary.per_class.items():
            row = f"{name} {m['precision']:.4f} {m['recall']:.4f} {m['f1']:.4f} {m['support']:g}"
            assert row in text, name
        ingestion = json.loads(Path(summary.ingestion_report).read_text())
        totals = ingestion["totals"]
        assert f"{totals['ingested']} images in {totals['classes']} classes" in text
        for split, info in ingestion["splits"].items():
            counts = [str(info["classes"].get(c, 0)) for c in ingestion["class_names"]]
            assert f"{split} {' '.join(counts)}" in text, split
        assert summary.run_id in text
        assert ("NOT blessed" in text) == (summary.blessed is False)


def test_model_card_is_in_the_pushed_version_with_the_evaluators_numbers(
    pipeline_runs, pushed_model
):
    card = (pushed_model.version_dir / CARD_PATH).read_text()
    first = _summaries(pipeline_runs)[0]
    assert card.startswith(f"# Model card: {pipeline_runs.model_name}, version 1\n")
    for name, value in first.metrics.items():
        assert f"| {name} | {value:.4f} |" in card
    for name, m in first.per_class.items():
        assert f"| {name} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} |" in card
    assert "Baseline: none (nothing was served before this model)." in card
    assert "- Decision: blessed." in card


_RENDER_CHECK = """<script>
window.__errors = [];
window.addEventListener("error", (e) => window.__errors.push(String(e.message ||
  (e.target && e.target.tagName) || "error")), true);
const __consoleError = console.error;
console.error = (...args) => { window.__errors.push(args.join(" ")); __consoleError(...args); };
window.addEventListener("load", () => {
  const images = Array.from(document.images);
  const out = document.createElement("pre");
  out.id = "render-check";
  out.textContent = JSON.stringify({
    images: images.length,
    unrendered: images.filter((i) => !(i.complete && i.naturalWidth > 0 && i.naturalHeight > 0))
      .map((i) => i.alt),
    errors: window.__errors,
  });
  document.body.appendChild(out);
});
</script>"""


def _chromium(binary: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_renders_in_headless_chromium(pipeline_runs, chromium, tmp_path):
    report = _report_path(pipeline_runs.first_run_log)
    # A copy with a probe script first in <head>: it records errors and, once loaded,
    # writes how many images rendered into the DOM that --dump-dom prints.
    probed = tmp_path / "probed.html"
    probed.write_text(
        report.read_text(encoding="utf-8").replace("<head>", "<head>" + _RENDER_CHECK, 1),
        encoding="utf-8",
    )
    dom = _chromium(chromium, "--virtual-time-budget=20000", "--dump-dom", probed.as_uri())
    assert dom.returncode == 0, dom.stderr[-3000:]
    found = re.search(r'<pre id="render-check">(.*?)</pre>', dom.stdout, re.S)
    assert found, dom.stdout[-2000:]
    check = json.loads(html.unescape(found.group(1)))
    assert check["images"] == len(_page(report).images) >= 6
    assert check["unrendered"] == [] and check["errors"] == []
    assert ":CONSOLE(" not in dom.stderr  # Chromium logs every console message it sees.
    screenshot = tmp_path / "report.png"
    shot = _chromium(
        chromium, "--window-size=1280,4000", f"--screenshot={screenshot}", report.as_uri()
    )
    assert shot.returncode == 0, shot.stderr[-3000:]
    from PIL import Image

    with Image.open(screenshot) as image:
        assert image.format == "PNG" and image.size == (1280, 4000)
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # Not a blank page.
