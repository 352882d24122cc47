"""The dashboard page (GET / on the admin port) in headless Chromium (Debian's `chromium`)
during a run: it shows the connectors and a non-empty throughput plot; a screenshot is left
in the test's tmp directory (a CI artefact, never committed)."""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

from admin_support import TOKEN, AdminWorker, flowing, write_pipeline

from conftest import require_server


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    require_server("chromium", "apt-get install chromium (.ci/run installs it)")
    raise AssertionError("unreachable")


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--virtual-time-budget=6000",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_dashboard_shows_connectors_and_throughput(tmp_path: Path) -> None:
    browser = _chromium()
    source = tmp_path / "in.jsonl"
    source.write_text("")
    files = [
        write_pipeline(
            tmp_path / "p.yaml",
            [
                flowing("orders", "./in.jsonl", "./out.jsonl"),
                flowing("audit", "./in.jsonl", "./audit.jsonl"),
            ],
        )
    ]
    stop = threading.Event()

    def produce() -> None:
        i = 0
        with source.open("a") as f:
            while not stop.is_set():
                f.write(f'{{"id": {i}}}\n')
                f.flush()
                i += 1
                time.sleep(0.002)

    with AdminWorker(tmp_path, files) as w:
        writer = threading.Thread(target=produce)
        writer.start()
        try:
            w.wait_for(lambda: w.status("orders")["rate_out"] > 0, "records flowing")
            url = f"{w.url}/#token={TOKEN}"
            dom = _headless(browser, "--dump-dom", url)
            assert dom.returncode == 0, dom.stderr[-3000:]
            shot = tmp_path / "dashboard.png"
            _headless(browser, "--window-size=1280,900", f"--screenshot={shot}", url)
        finally:
            stop.set()
            writer.join()
        assert w.stop() == 0
    html = dom.stdout
    rows = re.findall(r'<tr data-name="([^"]+)" data-state="([A-Z]+)"', html)
    assert sorted(rows) == [("audit", "RUNNING"), ("orders", "RUNNING")], html[-3000:]
    plots = re.findall(
        r'<svg class="plot throughput"[^>]*data-points="(\d+)" data-max="([\d.e+-]+)"', html
    )
    assert len(plots) == 2, html[-3000:]
    for points, peak in plots:
        assert int(points) >= 1 and float(peak) > 0  # a throughput line above zero
    assert "<polyline" in html
    assert shot.stat().st_size > 10_000  # a real picture, kept in the tmp dir
    print(f"dashboard screenshot: {shot}")
