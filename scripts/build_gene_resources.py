"""Build the gene resources bundled in ``lightning_langcell/tokenization/resources/``.

Inputs (read-only, each with its SOURCE.md): ``/work/shared/data/geneformer-30m`` (the
Geneformer-30M dictionaries as JSON) and ``/work/shared/data/gene_maps`` (GENCODE and
celltypist gene tables). Outputs (gzip, mtime 0, so the bytes are reproducible):

- ``token_dictionary.json.gz``, ``gene_median_dictionary.json.gz``, ``gene_name_id_dict.json.gz``:
  the Geneformer JSON files byte for byte (their sha256 equals the upstream SOURCE.md table);
- ``human_symbol_extra.json.gz``: human symbol -> Ensembl id from GENCODE v48 and v44 for
  symbols that ``gene_name_id_dict`` lacks, kept only when the id is in the vocabulary;
- ``mouse_to_human.json.gz``: ``{"symbol": {mouse symbol: human Ensembl id},
  "ensembl": {mouse Ensembl id: human Ensembl id}}`` through the celltypist (Ensembl 105)
  human<->mouse ortholog table, kept only when the human id is in the vocabulary.

Run: ``python scripts/build_gene_resources.py [--data /work/shared/data] [--check]``.
With ``--check`` nothing is written: the rebuilt content is compared with the bundled files
and with ``RESOURCE_SHA256`` in ``lightning_langcell/tokenization/bundled.py``.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lightning_langcell.tokenization.bundled import RESOURCE_DIR, RESOURCE_SHA256  # noqa: E402

GENEFORMER_FILES = ("token_dictionary.json", "gene_median_dictionary.json", "gene_name_id_dict.json")
# sha256 of the upstream JSON files (shared/data/geneformer-30m/SOURCE.md)
UPSTREAM_SHA256 = {
    "token_dictionary.json": "a24af6551494d0b21d1e3d8977d218efad7238284e89b588c6dd02fe980923c2",
    "gene_median_dictionary.json": "507ba58dafa0ac1f7f6ff97ed321026de1922a5e4cfba22b8b92526e12766fa9",
    "gene_name_id_dict.json": "7a9aaf0682834fd3c19e4941c2db569cccb4838a88a624eb662fe28613190f3c",
}


def canonical_json(obj: object) -> bytes:
    """Sorted keys, no spaces, ASCII: the same object always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def read_table(path: Path, names: list[str]) -> pd.DataFrame:
    return pd.read_csv(path, header=None, names=names, dtype=str, keep_default_na=False, usecols=range(len(names)))


def symbol_candidates(tables: list[pd.DataFrame]) -> dict[str, list[str]]:
    """symbol -> Ensembl ids in file order (GENCODE v48 first, then v44)."""
    found: dict[str, list[str]] = {}
    for table in tables:
        for ensembl_id, symbol in zip(table["ensembl_id"], table["symbol"]):
            if symbol and ensembl_id not in found.setdefault(symbol, []):
                found[symbol].append(ensembl_id)
    return found


def build_human_extra(gene_names: dict, vocab: set, gencode: list[pd.DataFrame]) -> dict[str, str]:
    """Symbols absent from Geneformer's gene_name_id_dict whose GENCODE id is in the vocabulary."""
    extra = {}
    for symbol, ids in symbol_candidates(gencode).items():
        if symbol in gene_names:
            continue
        in_vocab = [ensembl_id for ensembl_id in ids if ensembl_id in vocab]
        if in_vocab:
            extra[symbol] = in_vocab[0]
    return extra


def build_mouse_to_human(human_symbol: dict, vocab: set, orthologs: pd.DataFrame, mouse: pd.DataFrame) -> dict:
    """Mouse symbol / Ensembl id -> human Ensembl id in the vocabulary.

    A mouse symbol with several human orthologs takes the one spelled the same in capitals
    (``Actb`` -> ``ACTB``) when that one is in the vocabulary, else the first in table order.
    """
    candidates: dict[str, list[str]] = {}
    for human, mouse_symbol in zip(orthologs["human"], orthologs["mouse"]):
        if human and mouse_symbol:
            candidates.setdefault(mouse_symbol, []).append(human)
    by_symbol = {}
    for mouse_symbol, humans in candidates.items():
        in_vocab = [h for h in humans if human_symbol.get(h) in vocab]
        if not in_vocab:
            continue
        same = [h for h in in_vocab if h == mouse_symbol.upper()]
        by_symbol[mouse_symbol] = human_symbol[(same or in_vocab)[0]]
    by_ensembl = {
        ensembl_id: by_symbol[symbol]
        for ensembl_id, symbol in zip(mouse["ensembl_id"], mouse["symbol"])
        if symbol in by_symbol
    }
    return {"symbol": by_symbol, "ensembl": by_ensembl}


def build(data: Path) -> dict[str, bytes]:
    """All resource contents (uncompressed bytes) by file name."""
    contents = {}
    for name in GENEFORMER_FILES:
        raw = (data / "geneformer-30m" / name).read_bytes()
        if hashlib.sha256(raw).hexdigest() != UPSTREAM_SHA256[name]:
            raise SystemExit(f"{name}: sha256 differs from geneformer-30m/SOURCE.md; refusing to bundle it.")
        contents[name] = raw
    vocab = set(json.loads(contents["token_dictionary.json"])) - {"<pad>", "<mask>"}
    gene_names = json.loads(contents["gene_name_id_dict.json"])
    maps = data / "gene_maps"
    gencode = [
        read_table(maps / "genes_homo_sapiens.csv.gz", ["ensembl_id", "symbol"]),
        read_table(maps / "celltypist_GENCODEv44_Gene_id2name.csv.gz", ["ensembl_id", "symbol"]),
    ]
    extra = build_human_extra(gene_names, vocab, gencode)
    contents["human_symbol_extra.json"] = canonical_json(extra)
    human_symbol = {**extra, **gene_names}
    orthologs = read_table(maps / "celltypist_Ensembl105_Human2Mouse_Genes.csv.gz", ["human", "mouse"])
    mouse = read_table(maps / "genes_mus_musculus.csv.gz", ["ensembl_id", "symbol"])
    contents["mouse_to_human.json"] = canonical_json(build_mouse_to_human(human_symbol, vocab, orthologs, mouse))
    return contents


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data"))
    parser.add_argument("--check", action="store_true", help="compare with the bundled files; write nothing")
    args = parser.parse_args(argv)
    status = 0
    for name, raw in build(args.data).items():
        digest = hashlib.sha256(raw).hexdigest()
        target = RESOURCE_DIR / f"{name}.gz"
        if args.check:
            same_file = target.is_file() and gzip.decompress(target.read_bytes()) == raw
            same_code = RESOURCE_SHA256.get(f"{name}.gz") == digest
            status |= not (same_file and same_code)
            print(f"{name}: file {'ok' if same_file else 'DIFFERS'}, code checksum {'ok' if same_code else 'DIFFERS'}")
            continue
        target.write_bytes(gzip.compress(raw, compresslevel=9, mtime=0))
        print(f'    "{name}.gz": "{digest}",  # {len(raw):,} bytes -> {target.stat().st_size:,} gzip')
    if not args.check:
        print("Paste the lines above into RESOURCE_SHA256 in lightning_langcell/tokenization/bundled.py.")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
