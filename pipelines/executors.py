"""Where a job's steps run. By default in the run's own process: on two cores a process per step
pays the Feast, Evidently and LightGBM imports again (about 19 CPU s each, ``docs/scaling.md``).
On Kubernetes the run itself is already a Job (the Helm values' ``K8sRunLauncher``, one per
backfill chunk); ``VIGIL_K8S_STEP_JOBS`` names the jobs whose steps should each be a Job of their
own too (``dagster_k8s.k8s_job_executor``), worth it where one step is minutes of work (the
retraining job's training on months of data), not for the daily steps."""

from __future__ import annotations

import dagster as dg

from vigil.settings import Settings, SettingsError


def step_executor(job: str, known: tuple[str, ...], settings: Settings) -> dg.ExecutorDefinition:
    wanted = [n for n in settings.k8s_step_jobs.split(",") if n]
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise SettingsError(f"VIGIL_K8S_STEP_JOBS names no job {', '.join(unknown)}; jobs: {', '.join(known)}")
    if job not in wanted:
        return dg.in_process_executor
    try:
        from dagster_k8s import k8s_job_executor
    except ImportError as exc:
        raise SettingsError(f"VIGIL_K8S_STEP_JOBS={settings.k8s_step_jobs} needs dagster-k8s "
                            "(the `k8s` extra: uv sync --extra k8s)") from exc
    return k8s_job_executor
