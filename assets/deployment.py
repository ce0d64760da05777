"""Deployment: register the evaluated model with its lineage, then promote it (a logged act)."""


import subprocess
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from assets.common import io_retries

import vigil
from resources import VigilStorage
from vigil import data_profile, registry
from vigil.model import FraudModel
from vigil.policy import DecisionPolicy


def code_version() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent).stdout.strip()
    except Exception:
        sha = ""
    return f"{vigil.__version__}+{sha}" if sha else vigil.__version__


@dg.asset(group_name="deployment", kinds={"bentoml"})
@io_retries
def registered_model(context: dg.AssetExecutionContext, storage: VigilStorage, fraud_model: dict) -> dict:
    """A new version in the BentoML model store, carrying data, features, params, metrics, code."""
    model_dir = Path(fraud_model["model_dir"])
    model = FraudModel.load(model_dir)
    meta = {
        "lineage": fraud_model["lineage"],
        "metrics": fraud_model["metrics"],
        "params": model.booster.params if hasattr(model.booster, "params") else {},
        "code_version": code_version(),
        "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "dagster_run_id": context.run.run_id,
        "train_seconds": fraud_model["train_seconds"],
        # the champion comparison, read by a rollout (BentoML metadata takes no None)
        "gate_evidence": {k: v for k, v in (fraud_model.get("gate_evidence") or {}).items() if v is not None},
    }
    policy = DecisionPolicy.from_dict(fraud_model["policy"])
    tag = registry.register(storage.paths, model, policy, meta,
                            labels={"feature_service": fraud_model["lineage"]["feature_service"]},
                            reason=f"evaluation gate passed in run {context.run.run_id}", actor="dagster",
                            # the drift reference and the data profile travel with the model
                            extra_files=[model_dir / f for f in ("reference.parquet", data_profile.PROFILE_FILE, data_profile.IDS_FILE,
                                                                 "model_card.md", "pr_curve.png", "reliability.png",
                                                                 "feature_importance.png", "validation_scores.parquet")])
    info = registry.model_info(storage.paths, tag)
    context.add_output_metadata({"tag": tag, "code_version": meta["code_version"],
                                 "partitions": len(fraud_model["lineage"]["partition_hashes"]),
                                 "store_path": dg.MetadataValue.path(info["path"])})
    return {"tag": tag}


class DeployConfig(dg.Config):
    """``direct``: the candidate goes to production at once (the first model always does).
    ``rollout``: shadow, canary 5 / 25 / 50 %, production, driven by the rollout sensor with
    ``vigil.rollout.Guardrails`` (a failed analysis beyond the limit rolls back by itself)."""

    strategy: str = "direct"
    min_requests: int = 200
    min_seconds: float = 30.0


@dg.asset(group_name="deployment", kinds={"bentoml"})
@io_retries
def production_model(context: dg.AssetExecutionContext, config: DeployConfig, storage: VigilStorage,
                     registered_model: dict) -> dict:
    """Promotion to production, or the start of its rollout. Runs only after the blocking
    evaluation gate passed; every step is a registry transition."""
    from vigil import rollout

    if config.strategy not in ("direct", "rollout"):
        raise dg.Failure(f"strategy must be direct or rollout; got {config.strategy!r}")
    reason = f"evaluation gate passed in run {context.run.run_id}"
    if config.strategy == "rollout" and registry.current(storage.paths) is not None:
        g = rollout.Guardrails(min_requests=config.min_requests, min_seconds=config.min_seconds)
        state = rollout.start(storage.paths, registered_model["tag"], reason, actor="dagster", guardrails=g)
        context.add_output_metadata({"tag": state["candidate"], "rollout": "shadow", "champion": state["champion"]})
        return {"tag": state["candidate"], "stage": "shadow", "previous": state["champion"], "at": state["started_at"]}
    entry = registry.promote(storage.paths, registered_model["tag"], reason=reason, actor="dagster")
    context.add_output_metadata({"tag": entry["tag"], "previous": entry["previous"] or "none", "promoted_at": entry["at"]})
    return entry


class PromoteConfig(dg.Config):
    version: str  # model version (BentoML tag), see `vigil models`
    reason: str
    stage: str = "production"


class RollbackConfig(dg.Config):
    reason: str


@dg.op
def promote_version(context: dg.OpExecutionContext, config: PromoteConfig, storage: VigilStorage) -> dict:
    """`vigil promote` from the Dagster UI: the same rules, the run's id in the record."""
    entry = registry.promote(storage.paths, config.version, f"{config.reason} (Dagster run {context.run.run_id})",
                             stage=config.stage, actor=context.run.tags.get("user", "dagster"))
    context.log.info(f"{entry['tag']} -> {entry['stage']} (was {entry['previous'] or 'none'})")
    return entry


@dg.op
def rollback_production(context: dg.OpExecutionContext, config: RollbackConfig, storage: VigilStorage) -> dict:
    """`vigil rollback` from the Dagster UI: production back to the version that served before."""
    entry = registry.rollback(storage.paths, f"{config.reason} (Dagster run {context.run.run_id})",
                              actor=context.run.tags.get("user", "dagster"))
    context.log.info(f"rolled back to {entry['tag']} (was {entry['previous']})")
    return entry


@dg.job(description="Move a model version to a stage (default production), with a reason: `vigil promote`.")
def promote_model():
    promote_version()


@dg.job(description="Production back to the version that served before the current one: `vigil rollback`.")
def rollback_model():
    rollback_production()


class StartRolloutConfig(dg.Config):
    version: str
    reason: str
    min_requests: int = 200
    min_seconds: float = 30.0


@dg.op
def start_rollout_op(context: dg.OpExecutionContext, config: StartRolloutConfig, storage: VigilStorage) -> dict:
    """`vigil rollout start` from the Dagster UI."""
    from vigil import rollout

    g = rollout.Guardrails(min_requests=config.min_requests, min_seconds=config.min_seconds)
    state = rollout.start(storage.paths, config.version, f"{config.reason} (Dagster run {context.run.run_id})",
                          actor=context.run.tags.get("user", "dagster"), guardrails=g)
    context.log.info(f"{state['candidate']} in shadow beside {state['champion']}")
    return state


@dg.job(description="Roll a registered version out: shadow, canary 5/25/50 %, production (the rollout sensor drives it).")
def start_rollout():
    start_rollout_op()
