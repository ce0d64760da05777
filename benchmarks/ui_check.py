"""The Dagster UI as a user sees it, in a real headless browser: the model's and the drift report's
asset pages render their plots as images, and the drift report's link answers 200.

    .venv/bin/python benchmarks/ui_check.py [--home DIR] [--keep]

Runs ``vigil demo --once`` at small scale (or reuses ``--home`` from an earlier run), then starts
``dagster dev`` on that instance and ``vigil reports`` on the port the demo's metadata links to,
loads the asset pages in Chromium (``--headless --dump-dom`` after the app has rendered, and a
screenshot of each), and checks what a user would look at. Needs ``chromium`` (Debian package).
Writes ``benchmarks/results/ui_check.json``; screenshots go under the home's ``ui/`` folder.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PAGES = {"fraud_model": ["PR curve", "reliability diagram", "feature importance"], "drift_report": ["drift by feature"]}


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no chromium: apt-get install chromium")


def render(chrome: str, url: str, shot: Path, budget_ms: int = 25000) -> str:
    """The DOM after the page's scripts ran (virtual time), and a screenshot beside it."""
    common = [chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--virtual-time-budget={budget_ms}", "--window-size=1400,2400"]
    subprocess.run(common + [f"--screenshot={shot}", url], capture_output=True, timeout=120)
    return subprocess.run(common + ["--dump-dom", url], capture_output=True, text=True, timeout=120).stdout


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--home", default="")
    a = ap.parse_args()
    import httpx

    from vigil.processes import free_port, start, stop, wait_http

    chrome = browser()
    home = Path(a.home or tempfile.mkdtemp(prefix="vigil-ui-")).resolve() / "vigil"
    summary_file = home.parent / "demo-summary.json"
    t0 = time.perf_counter()
    if not summary_file.exists():
        r = subprocess.run([sys.executable, "-m", "vigil.cli", "demo", "--once", "--json", "--days", "80", "--customers", "400",
                            "--terminals", "800", "--seed", "7", "--drift", "concept:78:0.1", "--home", str(home),
                            "--dagster-port", "0", "--serving-port", "0"], cwd=ROOT, capture_output=True, text=True,
                           timeout=1800, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        if r.returncode != 0:
            raise SystemExit(f"demo failed:\n{r.stderr[-3000:]}")
        summary_file.write_text(r.stdout)
    summary = json.loads(summary_file.read_text())
    print(f"demo home ready in {time.perf_counter() - t0:.0f} s: {home}", file=sys.stderr)

    env = dict(os.environ, VIGIL_HOME=str(home), DAGSTER_HOME=str(home / "dagster"), BENTOML_HOME=str(home / "bentoml"),
               VIGIL_START_DATE="2025-04-01", PYTHONPATH=str(ROOT))
    reports_port = int(summary["urls"]["reports"].rsplit(":", 1)[1])
    dport = free_port(3000)
    (home / "ui").mkdir(exist_ok=True)
    procs = [start([sys.executable, "-m", "vigil.cli", "reports", "--port", str(reports_port), "--home", str(home)], env,
                   home / "ui" / "reports.log"),
             start([sys.executable, "-m", "dagster", "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1",
                    "-p", str(dport)], env, home / "ui" / "dagster.log")]
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "command": "python benchmarks/ui_check.py " + " ".join(sys.argv[1:]),
              "browser": subprocess.run([chrome, "--version"], capture_output=True, text=True).stdout.strip(), "pages": {}}
    try:
        wait_http(f"http://127.0.0.1:{dport}/server_info", 240, procs[1], "Dagster webserver", home / "ui" / "dagster.log")
        for asset, alts in PAGES.items():
            url = f"http://127.0.0.1:{dport}/assets/{asset}"
            dom = render(chrome, url, home / "ui" / f"{asset}.png")
            images = re.findall(r'<img[^>]*alt="([^"]*)"[^>]*src="data:image/png;base64,', dom) + \
                re.findall(r'<img[^>]*src="data:image/png;base64,[^"]*"[^>]*alt="([^"]*)"', dom)
            links = sorted(set(re.findall(r'href="(http://127\.0\.0\.1:\d+/drift/[^"]+\.html)"', dom)))
            page = {"url": url, "dom_bytes": len(dom), "png_images": sorted(set(images)),
                    "missing_images": [x for x in alts if x not in images], "report_links": links,
                    "screenshot": str(home / "ui" / f"{asset}.png")}
            if links:
                page["report_link_status"] = httpx.get(links[0], timeout=10).status_code
            result["pages"][asset] = page
            print(json.dumps(page), file=sys.stderr)
    finally:
        for p in procs:
            stop(p)
    ok = all(not p["missing_images"] for p in result["pages"].values()) and \
        result["pages"].get("drift_report", {}).get("report_link_status") == 200
    result["passed"] = ok
    from _world import write_result

    write_result("ui_check", result)
    if not ok:
        raise SystemExit("UI check failed: see benchmarks/results/ui_check.json")


if __name__ == "__main__":
    main()
