"""Training: a point-in-time training set from Feast, the model, and the blocking evaluation gate."""


import json
import shutil
import time
from datetime import date
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd

from assets.common import md_table, io_retries
from resources import FeatureStoreResource, VigilStorage
from vigil import data_profile, evaluation, lake, plots, registry
from vigil.config import LABEL_MATURITY_DAYS
from vigil.feature_repo import FEATURE_SERVICE
from vigil.features import MODEL_FEATURES
from vigil.model import DEFAULT_PARAMS
from vigil.policy import fit_policy
from vigil.training import LABEL_RULES, Plan, build_dataset, fit, known_compromised, plan_frames, train_and_evaluate

EVALUATION_GATE = "evaluation_gate"


REFERENCE_DAYS = 7  # the drift reference: the served model's most recent training days


class TrainingConfig(dg.Config):
    """``vigil.training.Plan``: the served model trains on the ``train_days`` before the last
    ``recent_days`` (where it is compared with the champion, labels known at T); the Handbook
    figures come from a backtest (``train_days``, ``gap_days``, then ``test_days`` of mature labels)."""

    last_day: str = ""  # empty: the latest validated partition
    train_days: int = 21
    test_days: int = 7
    gap_days: int = 7
    recent_days: int = 2  # 1 adapts faster but its comparison is rarely judged (benchmarks/adaptation.py)
    label_rule: str = "drop"  # unreported young rows: "drop" (left out) or "weight" (by report-delay share)
    seed: int = 0


class GateConfig(dg.Config):
    """The gate's thresholds (``vigil.evaluation.GateThresholds``); every figure is on the
    Handbook-protocol rows, which are lower than whole-week ones by construction (the cards already
    known compromised are left out): on the 400-customer test world AUC is ~0.76 there vs ~0.89
    on the whole week; at the default scale ~0.91."""

    min_auc: float = 0.70
    min_average_precision: float = 0.2
    max_regression: float = 0.02  # candidate AP may trail the champion's by at most this (beyond noise)
    bootstrap_samples: int = 200
    slice_min_auc: float = 0.60
    slice_min_rows: int = 200
    slice_min_frauds: int = 10
    max_latency_ms: float = 1.0  # median one-row Booster.predict (the model's own cost, not the machine's load)
    max_size_mb: float = 50.0

    def thresholds(self) -> evaluation.GateThresholds:
        return evaluation.GateThresholds(**self.model_dump())


@dg.asset(group_name="training", deps=["validated_transactions", "validated_labels", "feature_snapshots", "feast_registry"],
          kinds={"feast", "parquet"})
@io_retries
def training_set(context: dg.AssetExecutionContext, config: TrainingConfig, storage: VigilStorage,
                 feature_store: FeatureStoreResource) -> dict:
    """Train and held-out test frames from Feast point-in-time retrieval, labels known at T only."""
    paths = storage.paths
    available = lake.available_days(paths.validated)
    if not available:
        raise dg.Failure("no validated partitions yet: run the daily pipeline first")
    last = date.fromisoformat(config.last_day) if config.last_day else available[-1]
    if config.label_rule not in LABEL_RULES:
        raise dg.Failure(f"label_rule must be one of {LABEL_RULES}; got {config.label_rule!r}")
    try:
        plan = Plan.at(last, config.train_days, config.test_days, config.gap_days, config.recent_days,
                       first_day=available[0])
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    missing = [d for d in plan.days if d not in set(available)]
    if missing:
        raise dg.Failure(f"training window needs validated partitions {missing[0]}..{missing[-1]} ({len(missing)} missing)")
    store = feature_store.store()
    t0 = time.perf_counter()
    data, hashes = build_dataset(store, paths, plan.days, plan.as_of, keep_immature=True)
    frames = plan_frames(data, plan, config.label_rule)
    seconds = time.perf_counter() - t0
    out = paths.models / "training_sets" / context.run.run_id
    out.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame.to_parquet(out / f"{name}.parquet", index=False)
    # the Handbook protocol leaves out cards known compromised (frauds since the training start, reported)
    known = known_compromised(paths, plan.backtest.train_days[0], plan.as_of)
    known.to_parquet(out / "known_compromised.parquet", index=False)
    profile, ids = data_profile.build(paths, plan.fit_days)  # validation's reference once this model serves
    data_profile.save(profile, ids, out)
    train, recent = frames["train"], frames["recent"]
    span = lambda days: [days[0].isoformat(), days[-1].isoformat()]  # noqa: E731
    lineage = {
        "as_of": plan.as_of.isoformat(),
        "train_days": span(plan.fit_days),  # the served model's
        "recent_days": span(plan.recent_days),
        "label_rule": config.label_rule,
        "backtest_train_days": span(plan.backtest.train_days),
        "test_days": span(plan.backtest.test_days),  # the backtest's mature week: the Handbook figures
        "partition_hashes": hashes,
        "feature_service": FEATURE_SERVICE,
        "model_params": dict(DEFAULT_PARAMS),  # what `vigil reproduce` trains with again
        "seed": config.seed,
        # why this run trained: the trigger and its evidence (run tags), kept in the registry entry
        "trigger": {k.split("/", 1)[1]: v for k, v in context.run.tags.items() if k.startswith("vigil/")} or {"trigger": "manual"},
    }
    young = train["tx_datetime"] > plan.as_of - pd.Timedelta(days=LABEL_MATURITY_DAYS)
    context.add_output_metadata({
        "train_rows": len(train), "test_rows": len(frames["test"]), "recent_rows": len(recent),
        "backtest_train_rows": len(frames["backtest_train"]),
        "train_fraud_rate": float(train["label"].mean()), "test_fraud_rate": float(frames["test"]["label"].mean()),
        "recent_reported_frauds": int(recent["label"].sum()),
        "train_young_rows": int(young.sum()), "train_young_weight_mean": float(train.loc[young, "weight"].mean()) if young.any() else 1.0,
        "label_rule": config.label_rule,
        "retrieval_seconds": round(seconds, 2), "as_of": lineage["as_of"],
        "known_compromised_cards": int(known["customer_id"].nunique()),
        "train_window": " .. ".join(lineage["train_days"]), "recent_window": " .. ".join(lineage["recent_days"]),
        "backtest": f"train {' .. '.join(lineage['backtest_train_days'])}, test {' .. '.join(lineage['test_days'])}",
        "missing_feature_share": float(train[MODEL_FEATURES].isna().any(axis=1).mean()),
        "path": dg.MetadataValue.path(str(out)),
        "reference_daily_rows": round(profile["daily_rows_mean"], 1),
        "reference_amount_p999": round(profile["amount_p999"], 2),
    })
    return {"folder": str(out), "lineage": lineage, "seed": config.seed}


def model_card(lineage: dict, verdict: evaluation.GateResult, compare: pd.DataFrame, importance: pd.DataFrame,
               calibration_error: float, train_seconds: float, backtest: dict) -> str:
    """The model card, beside the model and in the model store: figures with their protocol, the
    gate's verdict, what it was trained on, and the plots (files next to it)."""
    shown = {k: v for k, v in backtest.items() if k.startswith(("handbook_", "week_")) and not k.endswith("_rows")}
    return "\n\n".join([
        "# Vigil fraud model: model card",
        f"Trained on {' .. '.join(lineage['train_days'])} (labels known at {lineage['as_of']}, unreported young "
        f"transactions: rule `{lineage.get('label_rule', 'drop')}`), feature service `{lineage['feature_service']}`, "
        f"{train_seconds:.1f} s.",
        "## Against the champion, recent window\n\n`recent_known_*`: the days "
        f"{' .. '.join(lineage.get('recent_days', []))}, which neither model trained on, every transaction, labels "
        "reported by T (both models face the same partial labels).\n\n" + compare.to_markdown(index=False, floatfmt=".4f"),
        "## Backtest of the recipe, mature week\n\nThe same training on "
        f"{' .. '.join(lineage.get('backtest_train_days', []))}, tested on {' .. '.join(lineage['test_days'])}. "
        "`handbook_*`: the Fraud Detection Handbook's protocol (cards already known compromised left out; CP@100 drops "
        "cards detected on earlier days). `week_*`: every row (flatters).\n\n"
        + pd.DataFrame([shown]).to_markdown(index=False, floatfmt=".4f"),
        f"Calibration error (week): {calibration_error:.5f}.\n\n![reliability](reliability.png)  ![PR curve](pr_curve.png)",
        "## Evaluation gate\n\n" + verdict.table().to_markdown(index=False, floatfmt=".4f"),
        "## Features by gain\n\n![importance](feature_importance.png)\n\n" + importance.head(15).to_markdown(index=False, floatfmt=".1f"),
        "## Lineage\n\n" + "\n".join(f"- {d}: `{h}`" for d, h in sorted(lineage["partition_hashes"].items())),
    ]) + "\n"


@dg.asset(group_name="training", kinds={"lightgbm", "scikit-learn"},
          check_specs=[dg.AssetCheckSpec(EVALUATION_GATE, asset="fraud_model", blocking=True,
                                         description="thresholds, no regression against the champion, latency and size")])
def fraud_model(context: dg.AssetExecutionContext, config: GateConfig, storage: VigilStorage, training_set: dict):
    """LightGBM with its scikit-learn preprocessing, evaluated on the later held-out week."""
    folder = Path(training_set["folder"])
    lineage = training_set["lineage"]
    train, test = pd.read_parquet(folder / "train.parquet"), pd.read_parquet(folder / "test.parquet")
    backtest_train, recent = pd.read_parquet(folder / "backtest_train.parquet"), pd.read_parquet(folder / "recent.parquet")
    known = pd.read_parquet(folder / "known_compromised.parquet")
    params, seed = lineage.get("model_params"), training_set["seed"]
    # the recipe's Handbook figures: the same training, on the weeks before a gap and a mature test week
    result = train_and_evaluate(backtest_train, test, params=params, seed=seed, known=known)
    t0 = time.perf_counter()
    model = fit(train, params, seed)  # the model that will serve: the freshest days
    train_seconds = time.perf_counter() - t0
    model_dir = folder / "model"
    model.save(model_dir)
    last_fit = pd.Timestamp(lineage["train_days"][1]) - pd.Timedelta(days=REFERENCE_DAYS - 1)
    fresh = train[train["tx_datetime"] >= last_fit]  # drift reference: the traffic it was fitted closest to
    reference = fresh[MODEL_FEATURES].sample(min(len(fresh), 100_000), random_state=0)
    reference.to_parquet(model_dir / "reference.parquet", index=False)
    for name in (data_profile.PROFILE_FILE, data_profile.IDS_FILE):
        shutil.copyfile(folder / name, model_dir / name)
    recent = recent.assign(score=model.predict(recent[MODEL_FEATURES].to_numpy()))
    policy = fit_policy(recent["score"].to_numpy()) if len(recent) >= 200 else result.policy
    recent[["transaction_id", "tx_datetime", "label", "score"]].to_parquet(model_dir / "validation_scores.parquet", index=False)

    # Champion on the same recent window, facing the same partial labels: the candidate must not be worse.
    champion = registry.current(storage.paths)
    champ_metrics = None
    if champion:
        champ, _, _ = registry.load(storage.paths, champion["tag"])
        recent["champion_score"] = champ.predict(recent[MODEL_FEATURES].to_numpy())
        champ_metrics = evaluation.measures(recent.assign(score=recent["champion_score"]), "recent_known", False)
    row = test[MODEL_FEATURES].to_numpy()[:1]
    lat = []
    for _ in range(500):
        s = time.perf_counter()
        model.predict(row)
        lat.append((time.perf_counter() - s) * 1000)
    # the gate judges the median: a p99 of 500 calls measures the machine's other load (a shared CI
    # core preempting the loop), which failed the gate with p99 4.4 ms for a 0.03 ms model
    latency_ms, latency_p99_ms = float(np.percentile(lat, 50)), float(np.percentile(lat, 99))
    size_mb = sum(f.stat().st_size for f in model_dir.iterdir()) / 1e6

    recent_m = evaluation.measures(recent, "recent_known", False)
    m = {**result.metrics, **{k: v for k, v in recent_m.items() if not k.endswith(("_rows", "_fraud_rate"))}}
    verdict = evaluation.judge(test.assign(score=result.test_frame["score"].to_numpy()), known, config.thresholds(),
                               latency_ms, size_mb, None, f"champion {champion['tag']}" if champion else "champion",
                               recent=recent if champion else None)
    failures = verdict.failures
    if failures:  # on record, so `vigil status` and `vigil models` show what the gate refused
        from assets.deployment import code_version

        registry.record_rejected(storage.paths, context.run.run_id, m, lineage, failures, code_version())
    auc, ap = m["handbook_auc"], m["handbook_average_precision"]
    shown = [k for k in recent_m if not k.endswith("_rows")]
    compare = pd.DataFrame([{"model": "candidate", "rows": len(recent), **{k: recent_m[k] for k in shown}}]
                           + ([{"model": f"champion {champion['tag']}", "rows": len(recent),
                                **{k: champ_metrics[k] for k in shown}}] if champ_metrics else []))
    evaluation_record = {"metrics": m, "train_metrics": result.train_metrics, "champion_recent": champ_metrics,
                         "latency_p50_ms": latency_ms, "latency_p99_ms": latency_p99_ms, "size_mb": size_mb,
                         "gate_failures": failures, "gate_rules": verdict.rules}
    importance = pd.DataFrame({"feature": MODEL_FEATURES, "gain": model.booster.feature_importance("gain")}).sort_values("gain", ascending=False)
    scored_test = test.assign(score=result.test_frame["score"])
    curve, reliability = evaluation.pr_curve(scored_test), evaluation.reliability(scored_test)
    calibration_error = evaluation.calibration_error(scored_test)
    evaluation_record["week_calibration_error"] = calibration_error
    pr_png = plots.pr_curve_png(curve, f"PR curve, test week (AP {m['week_average_precision']:.3f})")
    rel_png = plots.reliability_png(reliability, f"reliability, test week (ECE {calibration_error:.4f})")
    imp_png = plots.importance_png(importance, "feature importance (gain)")
    (model_dir / "pr_curve.png").write_bytes(pr_png)
    (model_dir / "reliability.png").write_bytes(rel_png)
    (model_dir / "feature_importance.png").write_bytes(imp_png)
    (folder / "evaluation.json").write_text(json.dumps(evaluation_record, indent=1))
    (model_dir / "model_card.md").write_text(model_card(lineage, verdict, compare, importance, calibration_error,
                                                        train_seconds, result.metrics))
    yield dg.Output(
        {"folder": str(folder), "model_dir": str(model_dir), "metrics": m, "policy": policy.to_dict(),
         "lineage": lineage, "train_seconds": train_seconds, "gate_passed": not failures,
         "gate_evidence": {**verdict.evidence, "champion": champion["tag"] if champion else None}},
        metadata={
            **{k: v for k, v in m.items() if k.startswith(("handbook_", "week_", "recent_known_"))},
            "train_week_auc": result.train_metrics["week_auc"], "train_seconds": round(train_seconds, 2),
            "protocol": "handbook_*, week_*: the recipe's backtest (trained on the weeks before a 7-day gap, tested on "
                        "the latest week with mature labels). handbook_*: test rows of cards known compromised (a fraud "
                        "reported before the day, since the training start) dropped; CP@100 drops cards detected on "
                        "earlier test days. week_*: every row, cards counted again each day. recent_known_*: the served "
                        "model on the recent window it did not train on, every row, labels reported by T.",
            "comparison": md_table(compare),
            "pr_curve": dg.MetadataValue.md(plots.markdown_image(pr_png, "PR curve") + "\n\n" + md_table(curve).value),
            "reliability": dg.MetadataValue.md(plots.markdown_image(rel_png, "reliability diagram") + "\n\n"
                                               + md_table(reliability).value),
            "week_calibration_error": round(calibration_error, 5),
            "feature_importance": dg.MetadataValue.md(plots.markdown_image(imp_png, "feature importance") + "\n\n"
                                                      + md_table(importance, ".1f").value),
            "model_card": dg.MetadataValue.path(str(model_dir / "model_card.md")),
            "gate": md_table(verdict.table().assign(actual=lambda d: d["actual"].astype(float))),
            "policy": dg.MetadataValue.json(policy.to_dict()),
        },
    )
    by_rule = {r["rule"]: r for r in verdict.rules}
    yield dg.AssetCheckResult(
        check_name=EVALUATION_GATE,
        passed=verdict.passed,
        metadata={"failures": "; ".join(failures) or "none",
                  "actual_handbook_auc": auc, "threshold_auc": config.min_auc,
                  "actual_handbook_average_precision": ap, "threshold_average_precision": config.min_average_precision,
                  "champion_recent_known_average_precision": champ_metrics["recent_known_average_precision"] if champ_metrics else None,
                  "candidate_recent_known_average_precision": m["recent_known_average_precision"],
                  "ap_delta_vs_champion": by_rule["no_regression"]["actual"], "regression_rule": by_rule["no_regression"]["note"],
                  "latency_p50_ms": latency_ms, "threshold_latency_ms": config.max_latency_ms,
                  "latency_p99_ms": latency_p99_ms, "size_mb": size_mb,
                  "rules": md_table(verdict.table().assign(actual=lambda d: d["actual"].astype(float)))},
    )
