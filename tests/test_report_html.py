"""report.html renders in headless Chromium: tables, claims verdicts and inlined plots are there,
every image decodes, and a screenshot shows a page that is not blank. Also: the Markdown twin
holds the same tables, and the HTML needs nothing outside itself.

Chromium comes from the Debian packages chromium and chromium-driver (scripts/test.sh installs
them when missing and it can); without them the browser tests skip, saying so. The driver is
spoken to through the W3C WebDriver HTTP protocol with urllib, so no Python package is needed.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from synthetic_results import EXPECTED, make_results

from evals.report import write_report

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
CHROME_ARGS = [
    "--headless=new",
    "--no-sandbox",  # tests run as root in CI
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--window-size=1200,2400",
]

needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs /usr/bin/chromium (apt-get install chromium chromium-driver; "
    "scripts/test.sh does it when run as root)",
)
needs_driver = pytest.mark.skipif(
    not CHROMIUM.exists() or not Path(CHROMEDRIVER).exists(),
    reason="needs /usr/bin/chromium and chromedriver (apt-get install chromium chromium-driver)",
)


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    prof = make_results(tmp_path_factory.mktemp("results"))
    # a run that started and left no results (crashed before its first step): not a seed that ran
    crashed = prof / "runs" / "better" / "seed5"
    crashed.mkdir()
    (crashed / "config.yaml").write_text((prof / "runs/better/seed0/config.yaml").read_text())
    (crashed / "metrics.jsonl").write_text("")
    write_report(prof, title="Synthetic report")
    return prof / "report.html"


def test_html_is_self_contained_and_matches_markdown(report):
    text = report.read_text()
    # nothing fetched from elsewhere: no http(s) links to scripts, styles or images
    assert not re.search(r"""(src|href)=["'](https?:)?//""", text)
    # bench deltas + bench values + claims + 5 curves
    assert text.count('src="data:image/png;base64,') >= 8
    md = (report.parent / "report.md").read_text()
    for heading in (
        "## arith_mix",
        "## Claims",
        "## Training",
        "## Learning curves",
        "## Protocol",
    ):
        assert heading in md
    assert "| better | better accuracy than GRPO | arith_mix / avg@4 | higher than grpo | " in md
    # claims are judged paired by seed (both ran seeds 0-2): differences .20 .20 .20, so the
    # paired CI is [+20.0, +20.0] and its MDE 0
    assert (
        "+20.0 pp [+20.0, +20.0] | 0.0 pp | 3 | paired | supported | "
        "CI above 0 (paired: 3 seed pairs) |" in md
    )
    assert "| better | 62.0 [57.0, 67.0] | 82.0 [77.0, 87.0] | 62.0 [57.0, 67.0] | " in md
    assert "| +20.0 [+15.5, +24.5] | 6.1 | 3 |" in md  # the benchmark table's MDE column
    # an inconclusive verdict says what these seeds cannot see
    # (noisy, paired: differences -.10 +.13 +.06, sd .11790: (t_.975,2 + t_.8,2) * sd / sqrt(3)
    # = (4.3027 + 1.0607) * .068069 = .3651)
    assert "CI contains 0; effects below 36.5 points cannot be seen here (MDE)" in md
    assert "(plots/claims.png)" in md and "(plots/bench_arith_mix.png)" in md
    # the deltas come first, then the absolute values
    assert md.index("(plots/bench_arith_mix_delta.png)") < md.index("(plots/bench_arith_mix.png)")
    # the protocol lists, per reproduction, only the seeds that have results
    assert (
        "Seeds with results (an evaluation or training metrics), per reproduction: `grpo` 0, 1, "
        "2; `sft_start` 0; `better` 0, 1, 2; `noisy` 0, 1, 2; `single` 0; `worse` 0, 1, 2." in md
    )
    claims_csv = (report.parent / "claims.csv").read_text()
    assert claims_csv.count("\n") == len(EXPECTED) + 1
    assert ",ci_high,mde,n_seeds," in claims_csv.splitlines()[0]


@needs_chromium
def test_screenshot_of_rendered_report(report, tmp_path):
    """Chromium's own --screenshot: the page renders to a PNG that is not blank."""
    import numpy as np
    from PIL import Image

    shot = tmp_path / "shot.png"
    r = subprocess.run(
        [str(CHROMIUM), *CHROME_ARGS, f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists(), r.stderr[-2000:]
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape == (2400, 1200)
    # a blank page is all white; the report has dark text, table borders and coloured verdicts
    assert (img < 128).mean() > 0.01 and img.std() > 20


class WebDriver:
    """Just enough of the W3C WebDriver protocol for the test."""

    def __init__(self, driver: str, binary: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        for _ in range(100):
            try:
                if self._call("GET", "/status")["value"].get("ready"):
                    break
            except OSError:
                pass
            time.sleep(0.1)
        caps = {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": str(binary), "args": CHROME_ARGS},
        }
        v = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["value"]
        self.session = f"/session/{v['sessionId']}"

    def _call(self, method: str, path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def get(self, url: str) -> None:
        self._call("POST", self.session + "/url", {"url": url})

    def js(self, script: str):
        return self._call("POST", self.session + "/execute/sync", {"script": script, "args": []})[
            "value"
        ]

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", self.session + "/screenshot")["value"])

    def quit(self) -> None:
        try:
            self._call("DELETE", self.session)
        finally:
            self.proc.terminate()
            self.proc.wait(timeout=10)


@needs_driver
def test_rendered_dom_in_chromium(report, tmp_path):
    """Through chromedriver: the rendered page has the tables, the claims with their verdicts,
    and every inlined image decoded to a real size."""
    from PIL import Image

    wd = WebDriver(CHROMEDRIVER, CHROMIUM)
    try:
        wd.get(report.as_uri())
        assert wd.js("return document.readyState") == "complete"
        assert wd.js("return document.title") == "Synthetic report"
        ids = wd.js("return [...document.querySelectorAll('table')].map(t => t.id)")
        assert ids == [
            "table-bench-arith_mix",
            "table-claims",
            "table-train",
            "table-budget",
            "table-protocol-arith_mix",
        ]
        claims = wd.js(
            "return [...document.querySelectorAll('#table-claims tbody tr')].map(r => "
            "[...r.cells].map(c => c.innerText.trim()))"
        )
        got = {(r[0], r[1]): r[8] for r in claims}
        assert got == EXPECTED
        # the verdict cell is coloured by its row's class (green / red / grey)
        colours = wd.js(
            "return Object.fromEntries([...document.querySelectorAll('#table-claims tbody tr')]"
            ".map(r => [r.className, getComputedStyle(r.querySelector('td.verdict'))"
            ".backgroundColor]))"
        )
        assert colours == {
            "supported": "rgb(46, 125, 50)",
            "not-supported": "rgb(198, 40, 40)",
            "inconclusive": "rgb(158, 158, 158)",
        }
        bench = wd.js(
            "return [...document.querySelectorAll('#table-bench-arith_mix tbody tr')]"
            ".map(r => r.cells[0].innerText.trim())"
        )
        assert bench == ["grpo", "sft_start", "better", "noisy", "single", "worse"]
        imgs = wd.js(
            "return [...document.images].map(i => [i.alt, i.complete, i.naturalWidth, "
            "i.naturalHeight])"
        )
        assert [i[0] for i in imgs] == [
            "bench_arith_mix_delta",
            "bench_arith_mix",
            "claims",
            "reward_mean",
            "accuracy",
            "completion_len_mean",
            "entropy",
            "kl",
        ]
        for alt, complete, w, h in imgs:
            assert complete and w > 200 and h > 100, (alt, w, h)
        protocol = wd.js("return document.querySelector('#protocol').innerText")
        assert "versions.torch" in protocol and "temperature" in protocol
        png = wd.screenshot()
        (tmp_path / "webdriver.png").write_bytes(png)
        assert Image.open(io.BytesIO(png)).size[0] > 500
    finally:
        wd.quit()
