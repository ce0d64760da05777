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
    from importlib.metadata import version

    # and the compiler's versions: a library outlives an image upgrade on a volume, and lleaves
    # loads a cached object without any check, so another version's entry function is never called
    target = f"{llvm.get_process_triple()}|{llvm.get_host_cpu_name()}|{features}|{version('lleaves')}|{version('llvmlite')}"
    return hashlib.sha256(target.encode()).hexdigest()[:12]


def cached(model: FraudModel, cache_dir: Path) -> Path:
    return Path(cache_dir) / f"{booster_hash(model)}-{host_key()}.so"


def compile_model(model: FraudModel, cache_dir: Path):
    """The compiled predictor of ``model`` (cached in ``cache_dir``, with its sha256 as the
    endpoint's :class:`ServingEngine` writes and checks it: the two share the cache)."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cached(model, cache_dir)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        model_file = Path(tmp) / "booster.txt"
        model.booster.save_model(str(model_file))
        return load_bytes(model_file, library(model_file, target, compile_file), Path(tmp))


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
RETRY_FIRST_S, RETRY_MAX_S = 60.0, 3600.0  # a failed build is tried again after this, doubling


def verified(target: Path) -> bytes | None:
    """The library's bytes when its ``.sha256`` says they are whole and unaltered; else None."""
    try:
        data, digest = Path(target).read_bytes(), Path(target).with_suffix(".sha256").read_text().strip()
    except FileNotFoundError:
        return None
    return data if hashlib.sha256(data).hexdigest() == digest else None


def library(model_file: Path, target: Path, build) -> bytes:
    """The checked bytes of ``target``'s library; when it was never built, or is torn, altered or
    without its digest, ``build(model_file, target)`` builds it (again) first, under a file lock:
    another process building it is waited for, and its library used."""
    import fcntl

    data = verified(target)
    if data is None:
        with open(Path(target).with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = verified(target)
            if data is None:
                build(model_file, target)
                data = verified(target)
                if data is None:
                    raise RuntimeError(f"{Path(target).name}: the build left no library matching its sha256")
    return data


def load_bytes(model_file: Path, data: bytes, folder: Path):
    """lleaves' predictor from library bytes already checked, through a private copy in ``folder``:
    the bytes checked are the bytes loaded, whatever happens to the cached file meanwhile."""
    import lleaves

    private = Path(folder) / "loaded.so"
    private.write_bytes(data)
    compiled = lleaves.Model(model_file=str(model_file))
    compiled.compile(cache=str(private))
    return compiled


def compile_file(model_file: Path, target: Path) -> None:
    """Compile a LightGBM model file to ``target``, with its sha256 beside it (``.sha256``), both
    written beside and moved in: a reader sees a whole library whose digest is already there."""
    import lleaves

    target = Path(target)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        part = Path(tmp) / "model.so"
        lleaves.Model(model_file=str(model_file)).compile(cache=str(part))
        digest = Path(tmp) / "digest"
        digest.write_text(hashlib.sha256(part.read_bytes()).hexdigest() + "\n")
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
    sha256 is checked (one that does not match, or has none, is built again) and the checked bytes
    are what is loaded; a build that fails (it may time out at nice 19 on busy cores) is tried again
    after a backoff. On every batch it scores, ``SPOT_ROWS`` rows are scored by LightGBM too and a
    difference over ``TOLERANCE`` (or an error) drops the library for good, and LightGBM scores
    that batch: the engine changes speed, never scores."""

    def __init__(self, model: FraudModel, cache_dir: Path, min_rows: int = SERVING_MIN_ROWS):
        self.model, self.cache_dir, self.min_rows = model, Path(cache_dir), min_rows
        self.compiled = None
        self.state = "lightgbm"  # -> compiling -> compiled, or failed: <why>
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._retry_at: float | None = None  # a build that failed is tried again from then on
        self._backoff = RETRY_FIRST_S

    def start(self) -> threading.Thread | None:
        """Begin preparing the library (once, or again once a failed build's backoff has passed);
        the thread, for tests to wait on."""
        with self._lock:
            if self._retry_at is not None and time.monotonic() >= self._retry_at:
                self._thread, self._retry_at, self.state = None, None, "lightgbm"
            if self._thread is None and self.state == "lightgbm":
                self.state = "compiling"
                self._thread = threading.Thread(target=self._prepare, name="vigil-compile", daemon=True)
                self._thread.start()
            return self._thread

    def _prepare(self) -> None:
        try:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            if sweep(self.cache_dir):
                log.info("removed build folders left in %s by a killed build", self.cache_dir)
            target = cached(self.model, self.cache_dir)
            with tempfile.TemporaryDirectory(dir=self.cache_dir) as tmp:
                model_file = Path(tmp) / "booster.txt"
                self.model.booster.save_model(str(model_file))
                compiled = load_bytes(model_file, library(model_file, target, _build_in_child), Path(tmp))
            with self._lock:
                if self.state == "compiling":
                    self.compiled, self.state, self._backoff = compiled, "compiled", RETRY_FIRST_S
            log.info("batches of %d rows or more are scored by the compiled booster %s", self.min_rows, target.name)
        except Exception as exc:  # a build that timed out (nice 19 on busy cores) or crashed: tried again later
            why = exc.stderr.decode(errors="replace")[-300:] if isinstance(exc, subprocess.CalledProcessError) else str(exc)
            self._fail(f"{type(exc).__name__}: {why}", retry=True)

    def _fail(self, why: str, retry: bool = False) -> None:
        """LightGBM scores from now on; with ``retry``, the build is tried again after a backoff
        (doubling, at most an hour); without, for good (a library that scored differently)."""
        with self._lock:
            self.compiled, self.state = None, f"failed: {why}"[:400]
            if retry:
                self._retry_at = time.monotonic() + self._backoff
                self.state += f" (tried again in {self._backoff:.0f} s)"
                self._backoff = min(self._backoff * 2, RETRY_MAX_S)
        log.warning("compiled booster not used, LightGBM scores (%s)", self.state)

    def predict(self, x: np.ndarray) -> np.ndarray | None:
        """Scores of rows ``x`` (NaN: missing) from the compiled booster, or None (LightGBM's turn,
        nothing imputed here): a small request, a library not ready, or one that disagrees with
        LightGBM on this batch's rows."""
        n = len(x)
        if n < self.min_rows:
            return None
        compiled = self.compiled
        if compiled is None:
            self.start()
            return None
        imputed = self.model.impute(x)
        try:
            out = compiled.predict(imputed, n_jobs=1)  # one core: the other worker has the other
        except Exception as exc:
            self._fail(f"the compiled booster raised {type(exc).__name__}: {exc}")
            return None
        spot = np.linspace(0, n - 1, min(SPOT_ROWS, n)).astype(np.int64)
        gap = float(np.max(np.abs(out[spot] - self.model.booster.predict(imputed[spot], num_threads=1))))
        if not gap <= TOLERANCE:  # NaN included
            self._fail(f"differs from LightGBM by {gap:.3g} on {len(spot)} rows of a batch")
            return None
        return out


def sweep(cache_dir: Path, older_than_s: float = 2 * COMPILE_TIMEOUT_S) -> int:
    """Remove the build folders (``tmp*``) a killed worker or ``vigil score`` left in the cache: no
    live build is older than its timeout. The number removed."""
    import shutil

    removed, now = 0, time.time()
    for entry in Path(cache_dir).glob("tmp*"):
        try:
            if entry.is_dir() and now - entry.stat().st_mtime > older_than_s:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except FileNotFoundError:  # another worker swept it first
            pass
    return removed


def _build_in_child(model_file: Path, target: Path) -> None:
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "vigil.compiled", str(model_file), str(target)],
                   check=True, capture_output=True, timeout=COMPILE_TIMEOUT_S)
    log.info("compiled the booster in %.1f s: %s", time.monotonic() - t0, Path(target).name)


def main(argv: list[str]) -> int:
    """``python -m vigil.compiled MODEL_FILE TARGET``: the child process of :class:`ServingEngine`,
    at the lowest CPU priority (the server's requests keep the cores), and the first process the
    kernel kills when memory runs out (not the worker that started it)."""
    os.nice(19)
    try:
        Path("/proc/self/oom_score_adj").write_text("1000")
    except OSError:  # not Linux, or not allowed: the build runs all the same
        pass
    compile_file(Path(argv[0]), Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
