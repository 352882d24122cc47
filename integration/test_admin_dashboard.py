"""The dashboard page (GET / on the admin port) in headless Chromium (Debian's `chromium`)
during a run (in real time, over the DevTools protocol: integration/admin_browser.py): it
shows the connectors and a non-empty throughput plot drawn from /metrics
(each plot says where its data came from in ``data-from``); a screenshot is left in the
test's tmp directory (a CI artefact, never committed)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

from admin_browser import find_chromium, load
from admin_support import TOKEN, AdminWorker, flowing, write_pipeline

from conftest import require_server


def _chromium() -> str:
    found = find_chromium()
    if found is None:
        require_server("chromium", "apt-get install chromium (.ci/run installs it)")
        raise AssertionError("unreachable")
    return found


#: Every connector's throughput plot is drawn, from the metrics, with a line above zero.
DRAWN = """(() => {
  const plots = [...document.querySelectorAll("svg.plot.throughput")];
  return plots.length === 2 && plots.every(
    (p) => p.dataset.from === "metrics" && Number(p.dataset.max) > 0);
})()"""


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
            page = load(browser, f"{w.url}/#token={TOKEN}", DRAWN)
            shot = tmp_path / "dashboard.png"
            shot.write_bytes(page.png)
        finally:
            stop.set()
            writer.join()
        assert w.stop() == 0
    html = page.html
    rows = re.findall(r'<tr data-name="([^"]+)" data-state="([A-Z]+)"', html)
    assert sorted(rows) == [("audit", "RUNNING"), ("orders", "RUNNING")], html[-3000:]
    plots = re.findall(r"<svg ([^>]*)>", html)
    by_kind: dict[str, list[dict[str, str]]] = {}
    for attrs in plots:
        values = dict(re.findall(r'([\w-]+)="([^"]*)"', attrs))
        if "plot" in values.get("class", ""):
            by_kind.setdefault(values["data-kind"], []).append(values)
    assert sorted(by_kind) == ["lag", "source-lag", "throughput"], html[-3000:]
    for kind, found in by_kind.items():
        assert len(found) == 2, (kind, html[-3000:])
        # Each plot is drawn from the worker's Prometheus metrics, not the status fallback:
        # throughput from meshconnect_records_{in,out}_total, lag from
        # meshconnect_consumer_lag_records, source lag from meshconnect_source_lag_seconds.
        assert {f["data-from"] for f in found} == {"metrics"}, (kind, found)
        assert all(int(f["data-points"]) >= 1 for f in found)
    for plot in by_kind["throughput"]:
        assert float(plot["data-max"]) > 0  # a throughput line above zero, from the counters
    assert "<polyline" in html
    assert shot.stat().st_size > 10_000  # a real picture, kept in the tmp dir
    print(f"dashboard screenshot: {shot}")
