"""Rebuild this folder's offline copy of the Dagster Helm chart's values schema.

Helm validates the chart's defaults merged with ours against ``values.schema.json``; that schema
points at Kubernetes definitions on the network (yannh/kubernetes-json-schema v1.19.0), so a copy
that validates offline needs those definitions beside it. This script:

1. reads the chart's schema as published (``upstream`` argument: helm/dagster/values.schema.json
   of dagster-io/dagster at the commit named in README.md);
2. points every ``$ref`` to that remote ``_definitions.json`` at ``kubernetes-definitions.json``
   in this folder instead (``#/definitions/X`` becomes ``#/$defs/X``; nothing else changes);
3. writes ``kubernetes-definitions.json``: the referenced Kubernetes definitions and everything
   they reference, taken from the ``_definitions.json`` that the kubernetes-validate package
   bundles (``--kubernetes`` version, default 1.25.0: the oldest it ships, nearest to 1.19.0),
   without their ``description`` texts.

``overlay OUT_DIR`` writes ``values.overlay.schema.json`` (:func:`overlay`: the schema for a values
file merged over the chart's defaults, as ours is) and a copy of ``kubernetes-definitions.json``
to OUT_DIR; it is derived, so it is not kept here.

Usage (``vendor`` needs kubernetes-validate installed; ``overlay`` only the standard library):
    python infra/helm/dagster-chart/vendor_schema.py vendor /path/to/upstream/values.schema.json
    python infra/helm/dagster-chart/vendor_schema.py overlay /tmp/dagster-schema
    check-jsonschema --schemafile /tmp/dagster-schema/values.overlay.schema.json infra/helm/dagster-values.yaml
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

HERE = Path(__file__).resolve().parent
REMOTE = "https://raw.githubusercontent.com/yannh/kubernetes-json-schema/master/v1.19.0/_definitions.json"
LOCAL = "kubernetes-definitions.json"


def closure(defs: dict, roots: set[str]) -> dict:
    """The definitions named in ``roots`` plus every definition they reference, transitively."""
    keep: dict = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in keep:
            continue
        keep[name] = defs[name]
        todo.extend(re.findall(r'"#/\$defs/([^"/]+)"', json.dumps(defs[name])))
    return dict(sorted(keep.items()))


def _strip_descriptions(node):
    if isinstance(node, dict):
        return {k: _strip_descriptions(v) for k, v in node.items() if not (k == "description" and isinstance(v, str))}
    if isinstance(node, list):
        return [_strip_descriptions(v) for v in node]
    return node


def overlay(schema: dict) -> dict:
    """``schema`` for an overlay values file. Helm merges maps of ours over the chart's defaults
    before it validates, so a key the schema requires inside a map may come from the defaults:
    ``required`` is dropped there. Lists are replaced whole, never merged, so inside ``items``
    every ``required`` stays: those objects go through ``strict__<name>`` copies of the
    definitions. ``additionalProperties: false`` (misspelt keys) and types apply everywhere."""
    defs = schema["$defs"]

    def walk(node, strict: bool):
        if isinstance(node, list):
            return [walk(v, strict) for v in node]
        if not isinstance(node, dict):
            return node
        out = {}
        for k, v in node.items():
            if k == "required" and not strict:
                continue
            if k == "$ref" and isinstance(v, str) and v.startswith("#/$defs/") and strict:
                out[k] = "#/$defs/strict__" + v[len("#/$defs/"):]
            elif k in ("properties", "$defs"):
                out[k] = {name: walk(sub, strict) for name, sub in v.items()}
            else:
                out[k] = walk(v, strict or k == "items")
        return out

    result = walk({k: v for k, v in schema.items() if k != "$defs"}, strict=False)
    result["$defs"] = {**{n: walk(d, False) for n, d in defs.items()},
                       **{f"strict__{n}": walk(d, True) for n, d in defs.items()}}
    return result


def write_overlay(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    schema = json.loads((HERE / "values.schema.json").read_text())
    shutil.copyfile(HERE / LOCAL, out_dir / LOCAL)
    path = out_dir / "values.overlay.schema.json"
    path.write_text(json.dumps(overlay(schema), indent=1) + "\n")
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("vendor")
    v.add_argument("upstream", type=Path)
    v.add_argument("--kubernetes", default="1.25.0")
    o = sub.add_parser("overlay")
    o.add_argument("out_dir", type=Path)
    args = p.parse_args()
    if args.cmd == "overlay":
        print(write_overlay(args.out_dir))
        return
    import kubernetes_validate

    text = args.upstream.read_text()
    roots = set(re.findall(re.escape(REMOTE) + r"#/definitions/([^\"/]+)", text))
    bundled = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{args.kubernetes}-local" / "_definitions.json"
    bundled_json = json.loads(bundled.read_text())
    out = {"$schema": bundled_json["$schema"],
           "description": f"Kubernetes v{args.kubernetes} definitions referenced by values.schema.json "
                          f"(from kubernetes-validate's bundled _definitions.json; see README.md)",
           "$defs": _strip_descriptions(closure(bundled_json["$defs"], roots))}
    (HERE / LOCAL).write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    schema = json.loads(text.replace(REMOTE + "#/definitions/", LOCAL + "#/$defs/"))
    (HERE / "values.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
    print(f"{len(out['$defs'])} Kubernetes definitions from {bundled}")


if __name__ == "__main__":
    main()
