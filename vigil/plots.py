"""Evaluation plots as PNG bytes (matplotlib, no display): what the Dagster UI and the model card
show beside the numbers."""

from __future__ import annotations

import base64
import io

import pandas as pd


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def _figure(ncols: int = 1):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(1, ncols, figsize=(4.2 * ncols, 3.4))


def pr_curve_png(curve: pd.DataFrame, title: str) -> bytes:
    """Precision against recall (:func:`vigil.evaluation.pr_curve`)."""
    fig, ax = _figure()
    ax.plot(curve["recall"], curve["precision"], lw=1.6)
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title=title)
    ax.grid(alpha=0.3)
    return _png(fig)


def reliability_png(table: pd.DataFrame, title: str) -> bytes:
    """Reliability diagram (:func:`vigil.evaluation.reliability`): fraud rate against mean score
    per bin, the diagonal being perfect calibration, and the rows per bin (log scale)."""
    fig, (ax, hist) = _figure(2)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.plot(table["mean_score"], table["fraud_rate"], marker="o", lw=1.4)
    ax.set(xlabel="mean score in bin", ylabel="observed fraud rate", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.grid(alpha=0.3)
    hist.bar(range(len(table)), table["rows"], color="tab:grey")
    hist.set_yscale("log")
    hist.set_xticks(range(len(table)), table["score_bin"], rotation=60, fontsize=7)
    hist.set(ylabel="rows", title="rows per score bin")
    return _png(fig)


def markdown_image(png: bytes, alt: str) -> str:
    """Markdown showing the image inline (a data URI: the Dagster UI renders it in asset metadata)."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def importance_png(importance: pd.DataFrame, title: str, top: int = 20) -> bytes:
    """Horizontal bars of the ``top`` features by gain (``feature``, ``gain`` columns)."""
    t = importance.sort_values("gain", ascending=True).tail(top)
    fig, ax = _figure()
    fig.set_size_inches(5.5, 0.22 * len(t) + 1.2)
    ax.barh(t["feature"], t["gain"], color="tab:blue")
    ax.set(xlabel="total gain", title=title)
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def drift_png(per_column: pd.DataFrame, title: str) -> bytes:
    """Per-feature drift scores (Evidently's test per column), drifted ones in red."""
    t = per_column.sort_values("score")
    fig, ax = _figure()
    fig.set_size_inches(5.5, 0.22 * len(t) + 1.2)
    colors = ["tab:red" if d is True or d == 1 else "tab:grey" for d in t["drifted"].tolist()]
    ax.barh(t["column"], t["score"], color=colors)
    ax.set(xlabel="drift score (method per column; red: drifted)", title=title)
    ax.tick_params(axis="y", labelsize=7)
    return _png(fig)


def timeseries_png(frame: pd.DataFrame, columns: list[str], title: str) -> bytes:
    """Lines of ``columns`` against ``day`` (e.g. live AP and CP@100 over the served days)."""
    fig, ax = _figure()
    fig.set_size_inches(6.5, 3.2)
    days = pd.to_datetime(frame["day"])
    for c in columns:
        if c in frame:
            ax.plot(days, frame[c], marker=".", lw=1.2, label=c)
    ax.set(title=title, ylim=(0, 1.02))
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    return _png(fig)
