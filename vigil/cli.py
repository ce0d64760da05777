"""Vigil's command line: the demo, simulation, the quarantine, scoring past days.

``vigil demo`` (:mod:`vigil.demo`) runs the whole loop on the embedded defaults; the other
commands read the state a pipeline left behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import date
from pathlib import Path

from vigil import config
from vigil.demo import demo, parse_drift


def quarantine(a: argparse.Namespace) -> None:
    import pandas as pd

    from vigil import lake

    paths = config.paths(a.home)
    path = lake.day_file(paths.quarantine, date.fromisoformat(a.date))
    # one thread: pyarrow's parquet reader threads can outlive the read into interpreter teardown and
    # abort the process after its output is written (apache/arrow#34314; ~30 % of runs here)
    frame = lake.read_parquet(path, use_threads=False) if path.exists() else None
    if frame is None:
        raise SystemExit(f"no quarantine for {a.date} in {paths.quarantine}: that day was not validated")
    if a.format == "csv":
        frame.to_csv(sys.stdout, index=False)
    elif a.format == "json":
        print(frame.to_json(orient="records", lines=True), end="")
    else:
        with pd.option_context("display.max_rows", 200, "display.width", 200):
            print(frame if len(frame) else f"{a.date}: no quarantined rows")


def score_cmd(a: argparse.Namespace) -> None:
    """Score past days from the offline store (the training path) with a registered model."""
    from vigil import batch_scoring
    from vigil.feature_repo import open_store

    paths = config.paths(a.home)
    try:
        first, last = date.fromisoformat(a.date_from), date.fromisoformat(a.date_to)
    except ValueError as exc:
        raise SystemExit(f"--from/--to must be dates (YYYY-MM-DD): {exc}") from exc
    os.environ.setdefault("BENTOML_HOME", str(paths.bentoml_home))
    if not a.out.lower().endswith(".parquet"):
        raise SystemExit(f"vigil score: {a.out}: the output is Parquet; name it *.parquet")
    try:
        scored = batch_scoring.score_days(paths, open_store(paths), first, last, a.model, a.engine)
        out = batch_scoring.write(scored, Path(a.out))
    except ValueError as exc:
        raise SystemExit(f"vigil score: {exc}") from exc
    decisions = scored.frame["decision"].value_counts().to_dict()
    s = scored.seconds
    print(f"{len(scored.frame):,} transactions of {first}..{last} scored by {scored.model_version} -> {out}\n"
          f"  decisions {decisions}\n"
          f"  seconds: read {s['read']:.2f}, point-in-time features {s['features']:.2f}, model {s['model']:.3f}, "
          f"policy {s['policy']:.3f}; model step {scored.rows_per_second['model']:,} rows/s ({scored.engine}"
          + (f", prepared (compiled) in {s['prepare']:.1f} s)" if scored.engine == "compiled" else ")"))


def status_cmd(a: argparse.Namespace) -> None:
    from vigil.status import render_status, status

    s = status(config.paths(a.home), os.environ.get("DAGSTER_HOME"))
    if a.json:
        import json

        print(json.dumps(s, indent=1, default=str))
    else:
        print(render_status(s))


def models_cmd(a: argparse.Namespace) -> None:
    from vigil.registry_db import open_records
    from vigil.status import render_models

    print(render_models(open_records(config.paths(a.home).registry).versions()))


def promote_cmd(a: argparse.Namespace) -> None:
    from vigil import registry
    from vigil.registry_db import StageError

    paths = config.paths(a.home)
    os.environ.setdefault("BENTOML_HOME", str(paths.bentoml_home))
    try:
        if a.cmd == "rollback":
            entry = registry.rollback(paths, a.reason)
        else:
            entry = registry.promote(paths, a.version, a.reason, stage=a.stage)
    except (StageError, ValueError, registry.ModelNotFound) as exc:
        raise SystemExit(f"vigil {a.cmd}: {exc}") from exc
    print(f"{entry['tag']} -> {entry['stage']} (was {entry['previous'] or 'none'}); the endpoint picks it up within seconds")


def rollout_cmd(a: argparse.Namespace) -> None:
    import json

    from vigil import registry, rollout
    from vigil.registry_db import StageError

    paths = config.paths(a.home)
    os.environ.setdefault("BENTOML_HOME", str(paths.bentoml_home))
    try:
        if a.action == "start":
            if not a.version or not a.reason.strip():
                raise ValueError("rollout start needs VERSION and --reason")
            g = rollout.Guardrails(min_requests=a.min_requests, min_seconds=a.min_seconds)
            st = rollout.start(paths, a.version, a.reason, guardrails=g)
            print(f"{st['candidate']} -> shadow beside {st['champion']}; the rollout sensor (or `vigil rollout advance`) "
                  f"moves it on after {g.min_requests} requests and {g.min_seconds:.0f} s per step")
        elif a.action == "abort":
            if not a.reason.strip():
                raise ValueError("rollout abort needs --reason")
            st = rollout.abort(paths, a.reason)
            print(f"rollout of {st['candidate']} aborted; {st['champion']} answers everything")
        elif a.action == "advance":
            print(json.dumps(rollout.advance(paths), indent=1, default=str))
        else:
            print(json.dumps(rollout.read_state(paths), indent=1) if rollout.read_state(paths) else "no rollout in progress")
    except (StageError, ValueError, registry.ModelNotFound) as exc:
        raise SystemExit(f"vigil rollout {a.action}: {exc}") from exc


def reproduce_cmd(a: argparse.Namespace) -> None:
    from vigil import registry
    from vigil.feature_repo import open_store
    from vigil.reproduce import reproduce

    paths = config.paths(a.home)
    os.environ.setdefault("BENTOML_HOME", str(paths.bentoml_home))
    try:
        r = reproduce(paths, open_store(paths), a.version)
    except registry.ModelNotFound as exc:
        raise SystemExit(f"vigil reproduce: {exc}") from exc
    print(r.render())
    if not r.reproduced:
        raise SystemExit(1)


def reports_cmd(a: argparse.Namespace) -> None:
    from vigil.reports import server

    paths = config.paths(a.home)
    httpd = server(paths.monitoring, port=a.port)
    print(f"serving {paths.monitoring} at http://127.0.0.1:{httpd.server_address[1]} (Ctrl-C stops)", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass


def keys_cmd(a: argparse.Namespace) -> None:
    """API keys of the scoring endpoint: the plain key is printed once, only its hash is kept."""
    from vigil import api_keys
    from vigil.settings import Settings

    path = Settings.from_env().keys_file()
    try:
        if a.action == "create":
            print(api_keys.create(path, a.name))
            print(f"key {a.name!r} stored (hashed) in {path}; send it as 'Authorization: Bearer <key>'", file=sys.stderr)
        elif a.action == "revoke":
            if not api_keys.revoke(path, a.name):
                raise SystemExit(f"no key named {a.name!r} in {path}")
            print(f"revoked {a.name!r}; the endpoint refuses it within a second")
        else:
            for k in api_keys.read(path):
                print(f"{k['name']}\tcreated {k.get('created_at', '?')}")
    except api_keys.KeyError_ as exc:
        raise SystemExit(str(exc)) from None


def simulate_cmd(a: argparse.Namespace) -> None:
    from vigil.simulator import simulate, write_landing

    sim = simulate(a.customers, a.terminals, a.days, a.start_date, a.seed, parse_drift(a.drift))
    files = write_landing(sim, Path(a.out))
    print(f"{len(sim.transactions):,} transactions, {len(sim.labels):,} fraud reports, {len(files)} files in {a.out}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="vigil", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    d = sub.add_parser("demo", help="simulate, backfill, train, promote, serve, replay a day, monitor")
    d.add_argument("--days", type=int, default=90,
                   help="days of history before the replayed day (default 90: 37 days of feature warm-up, "
                        "3 weeks of training, a gap week, a test week, a week of label maturity)")
    d.add_argument("--customers", type=int, default=5000)
    d.add_argument("--terminals", type=int, default=10000)
    d.add_argument("--seed", type=int, default=42)
    d.add_argument("--start-date", default=config.DEFAULT_START_DATE)
    d.add_argument("--drift", help="scenario:day[:intensity], e.g. concept:55:0.02 (comma-separated)")
    d.add_argument("--home", help="state folder (default $VIGIL_HOME or ./.vigil); wiped if a previous demo's")
    d.add_argument("--once", action="store_true", help="run to completion, stop what was started, exit")
    d.add_argument("--json", action="store_true", help="print the summary as JSON")
    d.add_argument("--wipe-dagster-storage", action="store_true",
                   help="production profile: empty Dagster's PostgreSQL storage (runs, events, ticks) first")
    d.add_argument("--dagster-port", type=int, default=3000)
    d.add_argument("--serving-port", type=int, default=3001)
    d.add_argument("--concurrency", type=int, default=4, help="parallel HTTP clients for the replay")
    d.add_argument("--rollout-seconds", type=float, default=150,
                   help="after a retraining, the next day's traffic is replayed over this long while it rolls out")
    d.add_argument("--wait-run", type=int, default=300,
                   help="seconds to wait for the landing sensor's run of the replayed day")
    d.add_argument("--wait-retrain", type=int, default=300,
                   help="when drift is detected, seconds to wait for the sensor-launched retraining run (0: don't wait)")
    d.set_defaults(fn=demo)

    s = sub.add_parser("simulate", help="write simulated landing files")
    s.add_argument("--out", required=True)
    s.add_argument("--days", type=int, default=183)
    s.add_argument("--customers", type=int, default=5000)
    s.add_argument("--terminals", type=int, default=10000)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--start-date", default=config.DEFAULT_START_DATE)
    s.add_argument("--drift")
    s.set_defaults(fn=simulate_cmd)

    qp = sub.add_parser("quarantine", help="show the rows rejected for a day, with reasons")
    qp.add_argument("--date", required=True)
    qp.add_argument("--format", choices=["table", "csv", "json"], default="table")
    qp.add_argument("--home")
    qp.set_defaults(fn=quarantine)

    sc = sub.add_parser("score", help="score past days with a registered model (point-in-time features from Feast)")
    sc.add_argument("--from", dest="date_from", required=True, help="first day, YYYY-MM-DD")
    sc.add_argument("--to", dest="date_to", required=True, help="last day (inclusive), YYYY-MM-DD")
    sc.add_argument("--model", help="model version (BentoML tag); default: the one in production")
    sc.add_argument("--out", required=True, help="output file, *.parquet")
    sc.add_argument("--engine", choices=("auto", "lightgbm", "compiled"), default="auto",
                    help="model engine: compiled = native code via lleaves (same scores, ~4x faster; compiling "
                         "takes ~20 s once per model, cached); auto compiles from 1,000,000 rows or when cached")
    sc.add_argument("--home", help="state folder (default $VIGIL_HOME or ./.vigil)")
    sc.set_defaults(fn=score_cmd)

    st = sub.add_parser("status", help="which model serves, since when, how good; the last rejection, drift report, transitions")
    st.add_argument("--home", help="state folder (default $VIGIL_HOME or ./.vigil)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=status_cmd)

    ms = sub.add_parser("models", help="every model version on record with its stage and figures")
    ms.add_argument("--home")
    ms.set_defaults(fn=models_cmd)

    pr = sub.add_parser("promote", help="move a version to a stage (default production), with a reason")
    pr.add_argument("version", help="model version (BentoML tag, see vigil models)")
    pr.add_argument("--reason", required=True)
    pr.add_argument("--stage", default="production", choices=["shadow", "canary", "production", "archived"])
    pr.add_argument("--home")
    pr.set_defaults(fn=promote_cmd)

    rb = sub.add_parser("rollback", help="production back to the version that served before the current one")
    rb.add_argument("--reason", required=True)
    rb.add_argument("--home")
    rb.set_defaults(fn=promote_cmd)

    ro = sub.add_parser("rollout", help="roll a version out: shadow, canary 5/25/50 %, production; status, advance, abort")
    ro.add_argument("action", choices=["start", "status", "advance", "abort"])
    ro.add_argument("version", nargs="?", help="for start: the registered version (see vigil models)")
    ro.add_argument("--reason", default="")
    ro.add_argument("--min-requests", type=int, default=200, help="start: requests per step before it is judged")
    ro.add_argument("--min-seconds", type=float, default=30.0, help="start: seconds per step before it is judged")
    ro.add_argument("--home")
    ro.set_defaults(fn=rollout_cmd)

    rp = sub.add_parser("reproduce", help="rebuild a version from its lineage; same predictions on its test week, "
                                          "or the input that changed")
    rp.add_argument("version")
    rp.add_argument("--home")
    rp.set_defaults(fn=reproduce_cmd)

    rs = sub.add_parser("reports", help="serve the drift reports over HTTP on 127.0.0.1 (the Dagster UI links here)")
    ky = sub.add_parser("keys", help="API keys of the scoring endpoint: create (printed once), list, revoke")
    ky.add_argument("action", choices=["create", "list", "revoke"])
    ky.add_argument("name", nargs="?", default="default")
    ky.set_defaults(fn=keys_cmd)

    rs.add_argument("--port", type=int, default=3002)
    rs.add_argument("--home")
    rs.set_defaults(fn=reports_cmd)

    a = p.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
