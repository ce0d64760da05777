"""The report server: files under the monitoring folder over HTTP, nothing else."""

import httpx

from vigil.reports import report_url, serve_in_thread


def test_serves_reports_and_nothing_else(tmp_path):
    (tmp_path / "drift").mkdir()
    (tmp_path / "drift" / "2025-06-01.html").write_text("<html>drift</html>")
    (tmp_path / "secret.txt").write_text("no")
    (tmp_path.parent / "outside.html").write_text("no")
    httpd, base = serve_in_thread(tmp_path)
    try:
        url = report_url(base, tmp_path, tmp_path / "drift" / "2025-06-01.html")
        assert url == f"{base}/drift/2025-06-01.html"
        r = httpx.get(url)
        assert r.status_code == 200 and r.text == "<html>drift</html>" and r.headers["content-type"].startswith("text/html")
        assert httpx.get(f"{base}/secret.txt").status_code == 404  # suffix not served
        assert httpx.get(f"{base}/../outside.html").status_code == 404  # confined to the folder
        assert httpx.get(f"{base}/%2e%2e/outside.html").status_code == 404
        assert httpx.get(f"{base}/drift/").status_code == 404  # no listing
        assert httpx.get(f"{base}/" + "a" * 600 + ".html").status_code == 414
    finally:
        httpd.shutdown()
