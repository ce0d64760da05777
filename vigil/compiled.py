"""The booster compiled to native code for scoring many rows (``vigil score``).

LightGBM walks its trees through a generic interpreter; ``lleaves`` compiles the same model file
with LLVM into one function per forest, about 4-5x faster on our boosters. Compiling costs
~20 s on two cores, so the result is cached per booster (keyed by the model file's hash) and used
only where it pays: a cached model, or a batch large enough. Every compiled model is checked
against LightGBM on rows of the batch before it scores anything; a mismatch falls back to
LightGBM, so the engine changes speed, never scores.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from vigil.model import FraudModel

log = logging.getLogger("vigil.compiled")
COMPILE_MIN_ROWS = 1_000_000  # below this, compiling (~20 s) costs more than it saves (~15 s at 66k rows/s)
CHECK_ROWS = 2_000
TOLERANCE = 1e-9


def available() -> bool:
    try:
        import lleaves  # noqa: F401
    except ImportError:
        return False
    return True


def booster_hash(model: FraudModel) -> str:
    return hashlib.sha256(model.booster.model_to_string().encode()).hexdigest()[:20]


def host_key() -> str:
    """The target lleaves compiles for: this host's triple, CPU and CPU features. Part of a cached
    library's name, so a library built on another machine (a shared volume, a copied cache) is
    never loaded here, where its instructions may not exist."""
    import llvmlite.binding as llvm

    llvm.initialize()
    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # as lleaves does: LLVM cannot tell, it compiles for the bare CPU name
        features = ""
    return hashlib.sha256(f"{llvm.get_process_triple()}|{llvm.get_host_cpu_name()}|{features}".encode()).hexdigest()[:12]


def cached(model: FraudModel, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"{booster_hash(model)}-{host_key()}.so"


def compile_model(model: FraudModel, cache_dir: Path):
    """The compiled predictor of ``model`` (cached in ``cache_dir``)."""
    import lleaves

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cached(model, cache_dir)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        model_file = Path(tmp) / "booster.txt"
        model.booster.save_model(str(model_file))
        compiled = lleaves.Model(model_file=str(model_file))
        if target.exists():
            compiled.compile(cache=str(target))
        else:  # compile beside, then move in: a concurrent reader never loads half a library
            part = Path(tmp) / "model.so"
            compiled.compile(cache=str(part))
            os.replace(part, target)
    return compiled


def predictor(model: FraudModel, x: np.ndarray, cache_dir: Path, engine: str = "auto"):
    """``(predict, name)`` for scoring ``x``: ``engine`` is ``lightgbm``, ``compiled`` or ``auto``
    (compiled when lleaves is installed and the model is cached or ``x`` has at least
    ``COMPILE_MIN_ROWS`` rows). ``predict`` takes rows with missing values already imputed."""
    if engine not in ("auto", "lightgbm", "compiled"):
        raise ValueError(f"engine must be auto, lightgbm or compiled; got {engine!r}")
    lgbm = (lambda rows: model.booster.predict(rows, num_threads=0)), "lightgbm"
    if engine == "lightgbm":
        return lgbm
    if not available():
        if engine == "compiled":
            raise ValueError("engine 'compiled' needs lleaves: install Vigil with the 'batch' extra")
        return lgbm
    if engine == "auto" and not cached(model, cache_dir).exists() and len(x) < COMPILE_MIN_ROWS:
        return lgbm
    compiled = compile_model(model, cache_dir)
    sample = x[:: max(1, len(x) // CHECK_ROWS)][:CHECK_ROWS]
    gap = float(np.max(np.abs(compiled.predict(sample, n_jobs=1) - model.booster.predict(sample, num_threads=1)),
                       initial=0.0))
    if gap > TOLERANCE:
        log.warning("compiled model differs from LightGBM by %.3g on %d rows: scoring with LightGBM", gap, len(sample))
        return lgbm
    return (lambda rows: compiled.predict(rows, n_jobs=os.cpu_count() or 1)), "compiled"


# -- serving ---------------------------------------------------------------------------------------
SERVING_MIN_ROWS = 256  # a /score_batch this large is scored by the compiled booster once it is ready
SPOT_ROWS = 32  # rows of every such batch scored by LightGBM too: a difference drops the compiled booster
COMPILE_TIMEOUT_S = 900


def _digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def compile_file(model_file: Path, target: Path) -> None:
    """Compile a LightGBM model file to ``target``, with its sha256 beside it (``.sha256``), both
    written beside and moved in: a reader sees a whole library whose digest is already there."""
    import lleaves

    target = Path(target)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        part = Path(tmp) / "model.so"
        lleaves.Model(model_file=str(model_file)).compile(cache=str(part))
        digest = Path(tmp) / "digest"
        digest.write_text(_digest(part) + "\n")
        os.replace(digest, target.with_suffix(".sha256"))
        os.replace(part, target)


class ServingEngine:
    """The served booster compiled to native code, off the request path.

    A 10,000-row batch's ``Booster.predict`` takes 26 ms on both cores of the benchmark machine;
    the compiled booster takes 9 ms on one (benchmarks/README.md). Compiling takes 10-20 s of a
    core, so it starts with the first batch of ``min_rows`` (a server that only answers ``/score``
    never compiles), in a child process at the lowest CPU priority (requests keep the cores); one
    worker compiles per model and host (a file lock; the others wait for its library). Until the
    library is loaded, and for smaller requests, LightGBM scores. Before a library is loaded its
    sha256 is checked; on every batch it scores, ``SPOT_ROWS`` rows are scored by LightGBM too and a
    difference over ``TOLERANCE`` drops the library for good (that batch is scored by LightGBM): the
    engine changes speed, never scores."""

    def __init__(self, model: FraudModel, cache_dir: Path, min_rows: int = SERVING_MIN_ROWS):
        self.model, self.cache_dir, self.min_rows = model, Path(cache_dir), min_rows
        self.compiled = None
        self.state = "lightgbm"  # -> compiling -> compiled, or failed: <why>
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def start(self) -> threading.Thread | None:
        """Begin preparing the library (once); the thread, for tests to wait on."""
        with self._lock:
            if self._thread is None and self.state == "lightgbm":
                self.state = "compiling"
                self._thread = threading.Thread(target=self._prepare, name="vigil-compile", daemon=True)
                self._thread.start()
            return self._thread

    def _prepare(self) -> None:
        try:
            import fcntl

            import lleaves

            self.cache_dir.mkdir(parents=True, exist_ok=True)
            target = cached(self.model, self.cache_dir)
            with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
                model_file = Path(tmp) / "booster.txt"
                self.model.booster.save_model(str(model_file))
                if not target.exists():
                    with open(target.with_suffix(".lock"), "w") as lock:
                        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker compiling it: wait for its library
                        if not target.exists():
                            t0 = time.monotonic()
                            subprocess.run([sys.executable, "-m", "vigil.compiled", str(model_file), str(target)],
                                           check=True, capture_output=True, timeout=COMPILE_TIMEOUT_S)
                            log.info("compiled the booster in %.1f s: %s", time.monotonic() - t0, target.name)
                digest = target.with_suffix(".sha256")
                if not digest.exists() or digest.read_text().strip() != _digest(target):
                    raise ValueError(f"{target.name} does not match its sha256 (a torn or altered file); not loaded")
                compiled = lleaves.Model(model_file=str(model_file))
                compiled.compile(cache=str(target))
            with self._lock:
                if self.state == "compiling":
                    self.compiled, self.state = compiled, "compiled"
            log.info("batches of %d rows or more are scored by the compiled booster %s", self.min_rows, target.name)
        except Exception as exc:
            why = exc.stderr.decode(errors="replace")[-300:] if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            self._fail(f"{type(exc).__name__}: {why}")

    def _fail(self, why: str) -> None:
        with self._lock:
            self.compiled, self.state = None, f"failed: {why}"[:400]
        log.warning("compiled booster not used, LightGBM scores (%s)", why)

    def predict(self, imputed: np.ndarray) -> np.ndarray | None:
        """Scores of ``imputed`` rows from the compiled booster, or None (LightGBM's turn): a small
        request, a library not ready, or one that disagrees with LightGBM on this batch's rows."""
        n = len(imputed)
        if n < self.min_rows:
            return None
        compiled = self.compiled
        if compiled is None:
            self.start()
            return None
        out = compiled.predict(imputed, n_jobs=1)  # one core: the other worker has the other
        spot = np.linspace(0, n - 1, min(SPOT_ROWS, n)).astype(np.int64)
        gap = float(np.max(np.abs(out[spot] - self.model.booster.predict(imputed[spot], num_threads=1))))
        if not gap <= TOLERANCE:  # NaN included
            self._fail(f"differs from LightGBM by {gap:.3g} on {len(spot)} rows of a batch")
            return None
        return out


def main(argv: list[str]) -> int:
    """``python -m vigil.compiled MODEL_FILE TARGET``: the child process of :class:`ServingEngine`,
    at the lowest CPU priority (the server's requests keep the cores)."""
    os.nice(19)
    compile_file(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
