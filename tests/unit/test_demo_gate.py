"""`vigil demo` names the gate's failed rules instead of printing a traceback."""

import json
import os

from vigil import config
from vigil.demo import gate_failures


def test_gate_failures_of_the_newest_candidate(tmp_path):
    paths = config.paths(tmp_path)
    assert gate_failures(paths) == []
    for i, failures in enumerate([["old: 1"], ["handbook_auc: 0.650 (floor 0.7)"]]):
        f = paths.models / "training_sets" / f"run{i}" / "evaluation.json"
        f.parent.mkdir(parents=True)
        f.write_text(json.dumps({"gate_failures": failures}))
        os.utime(f, (1_000_000 + i, 1_000_000 + i))
    assert gate_failures(paths) == ["handbook_auc: 0.650 (floor 0.7)"]
