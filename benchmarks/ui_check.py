"""The Dagster UI as a user sees it, in a real headless browser: the model's and the drift report's
asset pages render their plots as images, and the drift report's link answers 200.

    .venv/bin/python benchmarks/ui_check.py [--home DIR] [--keep]

Runs ``vigil demo --once`` at small scale (or reuses ``--home`` from an earlier run), then starts
``dagster dev`` on that instance and ``vigil reports`` on the port the demo's metadata links to,
and drives headless Chromium over its DevTools protocol as a user would: open the asset page,
dismiss Dagster's first-visit dialog, click each plot's "[Show Markdown]", and check that the
image decoded (``naturalWidth > 0``); follow the drift report's link. Needs ``chromium``
(Debian package). Writes ``benchmarks/results/ui_check.json``; screenshots of each opened plot go
under the home's ``ui/`` folder.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

PAGES = {"fraud_model": {"pr_curve": "PR curve", "reliability": "reliability diagram", "feature_importance": "feature importance"},
         "drift_report": {"drift_by_column": "drift by feature"}}


def browser() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    raise SystemExit("no chromium: apt-get install chromium")


class Browser:
    """Headless Chromium over the DevTools protocol (websockets): just enough to load a page, run
    JavaScript in it and take a screenshot."""

    def __init__(self, chrome: str, profile: Path):
        from vigil.processes import free_port

        self.port = free_port(9222)
        self.proc = subprocess.Popen([chrome, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                      f"--remote-debugging-port={self.port}", "--remote-debugging-address=127.0.0.1",
                                      f"--user-data-dir={profile}", "--window-size=1400,1800", "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        import httpx

        deadline = time.time() + 30
        while True:
            try:
                targets = httpx.get(f"http://127.0.0.1:{self.port}/json", timeout=2).json()
                self.ws_url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
                break
            except Exception:
                if time.time() > deadline:
                    raise
                time.sleep(0.3)
        from websockets.sync.client import connect

        self.ws = connect(self.ws_url, max_size=64 * 1024 * 1024).__enter__()
        self.n = 0

    def call(self, method: str, **params):
        self.n += 1
        self.ws.send(json.dumps({"id": self.n, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def js(self, expression: str):
        r = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 60) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(expression):
                return True
            time.sleep(0.5)
        return False

    def screenshot(self, path: Path) -> None:
        import base64

        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))

    def close(self) -> None:
        self.ws.__exit__(None, None, None)
        self.proc.kill()
        self.proc.wait()


ROW_LINK = """(() => {{
  const cells = [...document.querySelectorAll('td')].filter(td => td.innerText.trim() === {key});
  if (!cells.length) return 'no row';
  const row = cells[0].parentElement;
  const link = [...row.querySelectorAll('a'), ...row.querySelectorAll('button')].find(e => /Show Markdown/.test(e.innerText));
  if (!link) return 'no link';
  link.click(); return 'clicked';
}})()"""
IMAGES = """(() => [...document.querySelectorAll('img[src^="data:image/png"]')]
  .map(i => ({alt: i.alt, width: i.naturalWidth})))()"""
CLOSE = """(() => { document.dispatchEvent(new KeyboardEvent('keydown', {key: 'Escape', bubbles: true}));
  const b = [...document.querySelectorAll('button')].find(b => /^(Close|Done|Skip)$/.test(b.innerText.trim()));
  if (b) b.click(); return true; })()"""


def check_page(b: Browser, url: str, keys: dict[str, str], shots: Path) -> dict:
    """Open ``url``; for each metadata key, click its "[Show Markdown]" and find its image decoded."""
    b.call("Page.enable")
    b.call("Page.navigate", url=url)
    loaded = b.wait_for("document.body && document.body.innerText.includes('Metadata')", 90)
    # the first-visit "Join the Dagster community" dialog opens a moment after the page: skip it
    if b.wait_for("[...document.querySelectorAll('button')].some(b => b.innerText.trim() === 'Skip')", 10):
        b.js("[...document.querySelectorAll('button')].find(b => b.innerText.trim() === 'Skip').click()")
        time.sleep(1)
    out = {"url": url, "loaded": loaded, "plots": {}}
    for key, alt in keys.items():
        clicked = b.js(ROW_LINK.format(key=json.dumps(key)))
        ok = b.wait_for(f"[...document.querySelectorAll('img[src^=\"data:image/png\"]')].some(i => i.alt === {json.dumps(alt)} && i.naturalWidth > 0)", 20)
        imgs = b.js(IMAGES) or []
        b.screenshot(shots / f"{url.rsplit('/', 1)[1]}-{key}.png")
        out["plots"][key] = {"clicked": clicked, "rendered": ok,
                             "width_px": max([i["width"] for i in imgs if i["alt"] == alt], default=0)}
        b.js(CLOSE)
        time.sleep(0.5)
    out["report_links"] = sorted(set(b.js("[...document.querySelectorAll('a')].map(a => a.href)"
                                          ".filter(h => /:\\d+\\/drift\\/.*\\.html$/.test(h))") or []))
    return out


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
        b = Browser(chrome, home / "ui" / "chrome-profile")
        try:
            for asset, keys in PAGES.items():
                page = check_page(b, f"http://127.0.0.1:{dport}/assets/{asset}", keys, home / "ui")
                if page["report_links"]:
                    page["report_link_status"] = httpx.get(page["report_links"][0], timeout=10).status_code
                result["pages"][asset] = page
                print(json.dumps(page), file=sys.stderr)
        finally:
            b.close()
    finally:
        for p in procs:
            stop(p)
    ok = all(v["rendered"] for p in result["pages"].values() for v in p["plots"].values()) and \
        result["pages"].get("drift_report", {}).get("report_link_status") == 200
    result["passed"] = ok
    from _world import write_result

    write_result("ui_check", result)
    if not ok:
        raise SystemExit("UI check failed: see benchmarks/results/ui_check.json")


if __name__ == "__main__":
    main()
