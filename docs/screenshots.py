"""Take the web monitor's screenshots in docs/: the demo cluster, ``tidings web``, Chromium.

Runs ``tidings demo`` and ``tidings -A tidings.demo:app web`` on an embedded
broker in a temporary folder, lets the demo's client send its mix of tasks
for a while, then saves one PNG per page with Playwright driving Debian's
headless Chromium (``apt-get install -y chromium``).

    python docs/screenshots.py [--seconds 25]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DOCS = Path(__file__).resolve().parent
PORT = 15555
PAGES = (("web-dashboard", "/"), ("web-tasks", "/tasks"), ("web-failures", "/failures"),
         ("web-broker", "/broker"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=25)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    env = dict(os.environ, TIDINGS_BROKER_DATA_DIR=tempfile.mkdtemp(prefix="tidings-shots-"))
    py = sys.executable
    demo = subprocess.Popen([py, "-m", "tidings", "demo"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    web = subprocess.Popen([py, "-m", "tidings", "-A", "tidings.demo:app", "web", "--port",
                            str(PORT)], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{PORT}"
    try:
        time.sleep(args.seconds)
        with urllib.request.urlopen(base + "/api/tasks?state=FAILURE&limit=1") as r:
            failed = next(iter(json.loads(r.read())), None)
        with urllib.request.urlopen(base + "/api/tasks?search=name:demo.fan_out&limit=1") as r:
            newest = next(iter(json.loads(r.read()).values()), None)
        tree = newest and newest.get("root_id")
        with urllib.request.urlopen(base + "/api/workers?status=true") as r:
            worker = next(iter(sorted(json.loads(r.read()))), None)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium",
                                        args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 860})
            shots = list(PAGES)
            if failed:
                shots.append(("web-task", f"/task/{failed}"))
            if tree:
                shots.append(("web-workflow", f"/task/{tree}"))
            if worker:
                shots.append(("web-worker", f"/worker/{worker}"))
            for name, path in shots:
                page.goto(base + path)
                page.wait_for_timeout(1500)
                page.screenshot(path=str(DOCS / f"{name}.png"),
                                full_page=name in ("web-task", "web-workflow"))
                print(f"docs/{name}.png  {path}")
            browser.close()
    finally:
        for proc in (web, demo):
            proc.terminate()
        for proc in (web, demo):
            proc.wait(30)


if __name__ == "__main__":
    main()
