"""Take docs/shots/dashboard.png, the dashboard of docs/operations.md, from a real run.

    .venv/bin/python docs/shots/dashboard.py [OUT.png]

It starts ``meshconnect run --admin`` on three file pipelines in a temporary directory, feeds
them records at a varying rate (one pipeline's sink fails on a record, so it shows DEGRADED
with its restarts and last error), opens the dashboard in headless Chromium once every
throughput plot, drawn from ``/metrics``, has about 30 s of points, and saves the screenshot.
Needs chromium and the dev extras (the helpers of integration/).
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "integration"))

from admin_browser import find_chromium, load  # noqa: E402
from admin_support import TOKEN, AdminWorker, flowing, write_pipeline  # noqa: E402

#: Every throughput plot has this many points (the page polls every 2 s), from the metrics.
READY = """(() => {
  const plots = [...document.querySelectorAll("svg.plot.throughput")];
  const billing = document.querySelector('tr[data-name="billing"]');
  return plots.length === 3 && billing && billing.dataset.state === "DEGRADED" &&
    plots.every((p) => p.dataset.from === "metrics" && Number(p.dataset.points) >= 15) &&
    Number(plots[0].dataset.max) > 0;
})()"""


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("dashboard.png")
    browser = find_chromium()
    if browser is None:
        print("chromium is needed: apt-get install chromium", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="meshconnect-shot-") as tmp:
        cwd = Path(tmp)
        for name in ("orders", "audit", "billing"):
            (cwd / f"{name}.jsonl").write_text("")
        billing = flowing("billing", "./billing.jsonl", "./billing-out.jsonl")
        billing["sinks"][0]["transforms"] = [{"type": "cast", "fields": {"data.qty": "int"}}]
        files = [
            write_pipeline(
                cwd / "pipelines.yaml",
                [
                    flowing("orders", "./orders.jsonl", "./orders-out.jsonl"),
                    flowing("audit", "./audit.jsonl", "./audit-out.jsonl"),
                    billing,
                ],
            )
        ]
        stop = threading.Event()

        def produce() -> None:
            start, i = time.monotonic(), 0
            with (
                (cwd / "orders.jsonl").open("a") as orders,
                (cwd / "audit.jsonl").open("a") as audit,
                (cwd / "billing.jsonl").open("a") as bill,
            ):
                while not stop.is_set():
                    t = time.monotonic() - start
                    for _ in range(int(40 + 30 * math.sin(t / 4))):
                        orders.write(json.dumps({"id": i, "qty": i % 7}) + "\n")
                        if i % 3 == 0:
                            audit.write(json.dumps({"id": i}) + "\n")
                        i += 1
                    if 6 < t < 7 and i % 2:
                        bill.write(json.dumps({"id": i, "qty": "seven"}) + "\n")
                    elif t < 6:
                        bill.write(json.dumps({"id": i, "qty": i % 5}) + "\n")
                    for f in (orders, audit, bill):
                        f.flush()
                    time.sleep(0.1)

        with AdminWorker(cwd, files) as worker:
            writer = threading.Thread(target=produce)
            writer.start()
            try:
                page = load(browser, f"{worker.url}/#token={TOKEN}", READY, timeout=180)
            finally:
                stop.set()
                writer.join()
            worker.stop()
    out.write_bytes(page.png)
    print(f"{out}: {len(page.png)} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
