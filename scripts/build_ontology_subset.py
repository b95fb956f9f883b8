"""Build the compact ontology subset bundled in ``lightning_langcell/text/resources/``.

Reads the CELLxGENE ontology JSON exports (CL, UBERON, MONDO; one JSON object per file
mapping a term id to ``{"label", "description", "synonyms"?, "deprecated", "replaced_by"?}``)
and writes one columnar ``ontology_<PREFIX>.json.gz`` per ontology (format in
``lightning_langcell/text/ontology.py``). Byte-for-byte reproducible (gzip mtime 0).

What is kept (budget: ~2 MB gzip for all resources):
- CL: every non-deprecated term, with label, definition (null when none), synonyms and its
  direct parents among the kept terms (``is_a``/``part_of`` edges of distance 1 in the export's
  ``ancestors``; the ancestors are their closure);
- UBERON, MONDO: non-deprecated terms that have a definition, label + definition only;
- all three: ``replaced_by`` of deprecated terms, so old ids still resolve.

Usage::

    python scripts/build_ontology_subset.py [SOURCE] [--output DIR]

SOURCE is a folder holding ``<PREFIX>-ontology-v<version>.json.gz`` files, or one above
it with a ``cell_ontology/`` subfolder (default ``/work/shared/data``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from lightning_langcell.io_utils import atomic_file  # noqa: E402

DEFAULT_SOURCE = Path("/work/shared/data")
DEFAULT_OUTPUT = REPO_ROOT / "lightning_langcell" / "text" / "resources"

# prefix -> (keep terms without a definition, keep synonyms, keep parents)
POLICY = {
    "CL": (True, True, True),
    "UBERON": (False, False, False),
    "MONDO": (False, False, False),
}
SOURCE_NAME = "cellxgene-ontology-guide==1.11.1 (PyPI), cellxgene_ontology_guide/data/{file}.zst"


def find_export(source: Path, prefix: str) -> Path:
    """The newest ``<prefix>-ontology-v*.json.gz`` under ``source`` (or its cell_ontology/)."""
    for folder in (source, source / "cell_ontology"):
        found = sorted(folder.glob(f"{prefix}-ontology-v*.json.gz"))
        if found:
            return found[-1]
    raise SystemExit(f"No {prefix}-ontology-v*.json.gz under {source} or {source / 'cell_ontology'}.")


def subset(raw: dict, keep_undefined: bool, keep_synonyms: bool, keep_parents: bool = False) -> dict:
    """Columnar subset of one ontology export, sorted by id (``parents`` column only with ``keep_parents``)."""
    columns = {"id": [], "label": [], "definition": [], "synonyms": []}
    replaced_by = {}
    for term_id in sorted(raw):
        entry = raw[term_id]
        if entry.get("deprecated"):
            target = entry.get("replaced_by")
            if isinstance(target, str) and re.fullmatch(r"[A-Za-z]+:\d+", target):
                replaced_by[term_id] = target
            continue
        definition = (entry.get("description") or "").strip() or None
        if definition is None and not keep_undefined:
            continue
        columns["id"].append(term_id)
        columns["label"].append(entry["label"].strip())
        columns["definition"].append(definition)
        synonyms = sorted({s.strip() for s in entry.get("synonyms", []) if s.strip()})
        columns["synonyms"].append(synonyms if keep_synonyms else [])
    kept = set(columns["id"])
    if keep_parents:
        columns["parents"] = [sorted(parent for parent, distance in raw[term_id].get("ancestors", {}).items()
                                     if distance == 1 and parent in kept) for term_id in columns["id"]]
    columns["replaced_by"] = {old: new for old, new in replaced_by.items() if new in kept}
    return columns


def build(source: Path, output: Path) -> dict[str, dict]:
    """Write every ontology of ``POLICY`` to ``output``; return a summary per prefix."""
    summary = {}
    for prefix, (keep_undefined, keep_synonyms, keep_parents) in POLICY.items():
        path = find_export(source, prefix)
        version = re.search(r"-v([\d-]+)\.json", path.name).group(1)
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            raw = json.load(handle)
        payload = {"ontology": prefix, "version": version,
                   "source": SOURCE_NAME.format(file=path.name.removesuffix(".gz"))}
        payload.update(subset(raw, keep_undefined, keep_synonyms, keep_parents))
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        compressed = gzip.compress(data, compresslevel=9, mtime=0)
        target = output / f"ontology_{prefix}.json.gz"
        with atomic_file(target, "wb") as handle:
            handle.write(compressed)
        target.chmod(0o644)
        summary[prefix] = {
            "version": version, "terms": len(payload["id"]),
            "with_definition": sum(d is not None for d in payload["definition"]),
            "replaced_by": len(payload["replaced_by"]), "bytes": len(compressed),
        }
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    for prefix, row in build(args.source, args.output).items():
        print(prefix, json.dumps(row))


if __name__ == "__main__":
    main()
