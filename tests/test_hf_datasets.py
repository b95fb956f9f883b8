"""Hugging Face dataset folders <-> corpora: tokens and obs as from .h5ad, checks, round trips."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

datasets = pytest.importorskip("datasets")

from lightning_langcell.data.corpus import CellCorpus, is_corpus  # noqa: E402
from lightning_langcell.data.corpus_writer import tokenize_to_corpus  # noqa: E402
from lightning_langcell.data.hf_datasets import export_hf_dataset, import_hf_dataset  # noqa: E402
from lightning_langcell.errors import LangCellInputError  # noqa: E402
from lightning_langcell.tokenization import CLS_ID, CellTokenizer  # noqa: E402

SOURCE = Path(__file__).parent / "data" / "corpus_pbmc68k" / "pbmc_50cells.h5ad"
OBS = ["cell_type", "tissue", "tissue_ontology_term_id", "donor_id", "batch", "n_counts"]


@pytest.fixture(scope="module")
def h5ad_corpus(tmp_path_factory) -> CellCorpus:
    """The bundled cells tokenized from .h5ad with our tokenizer (the reference)."""
    return tokenize_to_corpus(str(SOURCE), tmp_path_factory.mktemp("h5ad") / "corpus", CellTokenizer(),
                              obs_columns=["n_counts"])


def cells_table(corpus: CellCorpus, cls: bool = False, cell_type_name: str = "cell_type") -> dict:
    """Columns of a Geneformer-style dataset holding the corpus' cells (``<cls>`` first with ``cls``)."""
    ids = [([CLS_ID] if cls else []) + corpus.input_ids(i).tolist() for i in range(len(corpus))]
    table = {"input_ids": ids, "length": [len(cell) for cell in ids]}
    for name in OBS:
        values = corpus.column(name)
        table[cell_type_name if name == "cell_type" else name] = (
            values.tolist() if corpus.column_kind(name) == "numeric" else np.asarray(values, dtype=object).tolist()
        )
    return table


def save(table: dict, path: Path, features=None) -> Path:
    datasets.Dataset.from_dict(table, features=features).save_to_disk(str(path))
    return path


def assert_same_cells(imported: CellCorpus, reference: CellCorpus) -> None:
    assert len(imported) == len(reference)
    np.testing.assert_array_equal(np.asarray(imported.offsets), np.asarray(reference.offsets))
    np.testing.assert_array_equal(np.asarray(imported.tokens), np.asarray(reference.tokens))
    for name in OBS:
        pd.testing.assert_series_equal(imported.obs[name].astype(object), reference.obs[name].astype(object),
                                       check_names=False)


def test_import_gives_the_tokens_and_obs_of_the_h5ad_corpus(h5ad_corpus, tmp_path):
    folder = save(cells_table(h5ad_corpus), tmp_path / "hf")
    imported = import_hf_dataset(folder, tmp_path / "corpus", chunk_size=7)  # several chunks
    assert_same_cells(imported, h5ad_corpus)
    from lightning_langcell.text import CellTextBuilder

    builder = CellTextBuilder()
    assert builder.texts_for(imported.obs) == builder.texts_for(h5ad_corpus.obs)
    assert imported.sources[0]["format"] == "huggingface_datasets"


def test_cls_prefixed_input_imports_identically(h5ad_corpus, tmp_path):
    folder = save(cells_table(h5ad_corpus, cls=True), tmp_path / "hf")
    assert_same_cells(import_hf_dataset(folder, tmp_path / "corpus", chunk_size=16), h5ad_corpus)


def test_long_cells_are_kept_whole(tmp_path):
    genes = list(range(2, 3002))  # 3,000 gene tokens: beyond the model maximum of 2,048
    folder = save({"input_ids": [genes, genes[:5]]}, tmp_path / "hf")
    corpus = import_hf_dataset(folder, tmp_path / "corpus")
    assert corpus.lengths.tolist() == [3000, 5]
    assert corpus.input_ids(0).tolist() == genes


def test_bad_id_error_names_the_id_and_its_row(h5ad_corpus, tmp_path):
    table = cells_table(h5ad_corpus)
    table["input_ids"][13] = table["input_ids"][13][:4] + [30000] + table["input_ids"][13][4:]
    table["length"][13] += 1
    with pytest.raises(LangCellInputError, match=r"Row 13 holds token id 30000"):
        import_hf_dataset(save(table, tmp_path / "hf"), tmp_path / "corpus", chunk_size=5)
    table["input_ids"][13] = [5, CLS_ID, 7]  # <cls> elsewhere than first is no gene
    table["length"][13] = 3
    with pytest.raises(LangCellInputError, match=rf"Row 13 holds token id {CLS_ID}"):
        import_hf_dataset(save(table, tmp_path / "hf2"), tmp_path / "corpus")
    assert not is_corpus(tmp_path / "corpus") and not (tmp_path / "corpus").exists()


def test_wrong_length_column_is_refused(h5ad_corpus, tmp_path):
    table = cells_table(h5ad_corpus)
    table["length"][4] += 2
    with pytest.raises(LangCellInputError, match=r"Row 4: 'length' says"):
        import_hf_dataset(save(table, tmp_path / "hf"), tmp_path / "corpus")


def test_dataset_dict_split_selection(h5ad_corpus, tmp_path):
    table = cells_table(h5ad_corpus)
    first = {key: values[:20] for key, values in table.items()}
    second = {key: values[20:] for key, values in table.items()}
    folder = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(first),
                          "test": datasets.Dataset.from_dict(second)}).save_to_disk(str(folder))
    test = import_hf_dataset(folder, tmp_path / "test", split="test")
    assert len(test) == len(h5ad_corpus) - 20
    np.testing.assert_array_equal(test.input_ids(0), h5ad_corpus.input_ids(20))
    with pytest.raises(LangCellInputError, match=r"splits \['train', 'test'\]; choose one"):
        import_hf_dataset(folder, tmp_path / "none")
    with pytest.raises(LangCellInputError, match=r"no split 'validation'"):
        import_hf_dataset(folder, tmp_path / "none", split="validation")


def test_auto_detected_cell_type_names_and_the_error_listing_columns(h5ad_corpus, tmp_path):
    folder = save(cells_table(h5ad_corpus, cell_type_name="str_labels"), tmp_path / "hf")
    corpus = import_hf_dataset(folder, tmp_path / "corpus")
    assert corpus.column("cell_type").tolist() == h5ad_corpus.column("cell_type").tolist()
    assert "str_labels" not in corpus.columns
    table = cells_table(h5ad_corpus)
    table["genes"] = table.pop("input_ids")
    other = save(table, tmp_path / "other")
    with pytest.raises(LangCellInputError, match=r"No token column found.*'cell_type'.*'genes'") as caught:
        import_hf_dataset(other, tmp_path / "none")
    assert "--token-column" in caught.value.fix
    assert_same_cells(import_hf_dataset(other, tmp_path / "named", token_column="genes"), h5ad_corpus)
    with pytest.raises(LangCellInputError, match=r"no cell type column 'labels'"):
        import_hf_dataset(other, tmp_path / "none", token_column="genes", cell_type_column="labels")


def test_round_trip_hf_corpus_hf_keeps_every_token_and_column(h5ad_corpus, tmp_path):
    table = cells_table(h5ad_corpus, cell_type_name="celltype")
    features = datasets.Features({
        "input_ids": datasets.Sequence(datasets.Value("int16")), "length": datasets.Value("int64"),
        "celltype": datasets.ClassLabel(names=sorted(set(table["celltype"]))),
        **{name: datasets.Value("string") for name in ("tissue", "tissue_ontology_term_id", "donor_id", "batch")},
        "n_counts": datasets.Value("float32"),
    })
    original = save(table, tmp_path / "hf", features)
    corpus = import_hf_dataset(original, tmp_path / "corpus")
    assert corpus.column("cell_type").tolist() == h5ad_corpus.column("cell_type").tolist()  # ClassLabel → names
    back = export_hf_dataset(corpus, tmp_path / "back", max_shard_size="20KB")
    before, after = datasets.load_from_disk(str(original)), datasets.load_from_disk(str(back))
    assert after.features == before.features
    assert after.to_dict() == before.to_dict()
    assert len(list(back.glob("*.arrow"))) > 1  # sharded


def test_export_with_cls_and_provenance(h5ad_corpus, tmp_path):
    back = datasets.load_from_disk(str(export_hf_dataset(h5ad_corpus, tmp_path / "hf", with_cls=True,
                                                         provenance=True)))
    assert back[7]["input_ids"] == [CLS_ID] + h5ad_corpus.input_ids(7).tolist()
    assert back[7]["length"] == len(h5ad_corpus.input_ids(7)) + 1
    assert back["obs_name"] == h5ad_corpus.column("obs_name").tolist()
    assert back["cell_type"] == h5ad_corpus.column("cell_type").tolist()
    again = import_hf_dataset(tmp_path / "hf", tmp_path / "again")
    assert_same_cells(again, h5ad_corpus)
    assert again.column("obs_name").tolist() == h5ad_corpus.column("obs_name").tolist()
    with pytest.raises(LangCellInputError, match="exists"):
        export_hf_dataset(h5ad_corpus, tmp_path / "hf")


def test_cli_tokenize_and_export(h5ad_corpus, tmp_path, capsys):
    from lightning_langcell.cli import main

    folder = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(cells_table(h5ad_corpus))}).save_to_disk(str(folder))
    summary = main(["tokenize", str(folder), "--output", str(tmp_path / "corpus"), "--split", "train"])
    assert summary["n_cells"] == len(h5ad_corpus)
    assert_same_cells(CellCorpus(tmp_path / "corpus"), h5ad_corpus)
    main(["export", str(tmp_path / "corpus"), str(tmp_path / "out"), "--with-cls"])
    assert datasets.load_from_disk(str(tmp_path / "out"))[0]["input_ids"][0] == CLS_ID


def test_data_module_accepts_a_dataset_folder(h5ad_corpus, tmp_path):
    from lightning_langcell.data.datamodule import LangCellDataModule

    folder = save(cells_table(h5ad_corpus), tmp_path / "hf")
    module = LangCellDataModule(str(folder), cache_dir=str(tmp_path / "cache"), texts=False)
    module.setup()
    assert_same_cells(module.corpus, h5ad_corpus)
    assert module.corpus.path.parent == tmp_path / "cache"
    assert module.classes == sorted(set(h5ad_corpus.column("cell_type").dropna()))
    stamp = (module.corpus.path / "manifest.json").stat().st_mtime_ns
    again = LangCellDataModule(str(folder), cache_dir=str(tmp_path / "cache"), texts=False)
    again.setup()  # the cache entry is found by content, not imported again
    assert again.corpus.path == module.corpus.path
    assert (again.corpus.path / "manifest.json").stat().st_mtime_ns == stamp


def test_missing_datasets_package_names_the_extra(monkeypatch):
    from lightning_langcell.data import hf_datasets

    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(LangCellInputError) as caught:
        hf_datasets._hf()
    assert "pip install 'lightning_langcell[hf]'" in caught.value.fix


HARNESS = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from lightning_langcell.data.hf_datasets import import_hf_dataset
    from lightning_langcell.tokenization import GeneVocabulary

    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

    vocabulary = GeneVocabulary.bundled()
    import pyarrow, pyarrow.compute, datasets  # imports before the cap
    limit = int((status("VmSize") + float(sys.argv[3])) * (1 << 20))
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    before = status("VmRSS")
    if sys.argv[2] == "load_from_disk":  # the memory-mapped route: maps every shard whole
        try:
            datasets.load_from_disk(sys.argv[1])
        except (OSError, MemoryError) as error:
            print(json.dumps({"loaded": False, "error": str(error)[:200]}))
        else:
            print(json.dumps({"loaded": True}))
        sys.exit(0)
    corpus = import_hf_dataset(sys.argv[1], sys.argv[2], vocabulary=vocabulary, chunk_size=1000)
    print(json.dumps({"cells": len(corpus), "tokens": int(corpus.manifest["n_tokens"]),
                      "rss_growth_mib": status("VmHWM") - before}))
""")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and RLIMIT_AS")
def test_chunked_import_fits_a_small_address_space(tmp_path):
    """A ~240 MiB dataset imports in a process capped at 150 MiB of address space above its imports."""
    cells, genes = 60_000, 1_000
    rng = np.random.default_rng(0)
    folder = tmp_path / "big"

    def rows():
        for _ in range(0, cells, 2000):
            for ids in rng.integers(2, 25426, size=(2000, genes), dtype=np.int32):
                yield {"input_ids": ids, "cell_type": "B cell"}

    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")),
                                  "cell_type": datasets.Value("string")})
    dataset = datasets.Dataset.from_generator(rows, features=features, cache_dir=str(tmp_path / "cache"))
    dataset.save_to_disk(str(folder))
    arrow_mib = sum(path.stat().st_size for path in folder.glob("*.arrow")) / (1 << 20)
    assert arrow_mib > 200
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]), OMP_NUM_THREADS="1")

    def job(output: str) -> dict:
        done = subprocess.run([sys.executable, "-c", HARNESS, str(folder), output, "150"],
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        print(output, done.stdout.strip().splitlines()[-1])
        return json.loads(done.stdout.strip().splitlines()[-1])

    figures = job(str(tmp_path / "corpus"))
    assert figures["cells"] == cells and figures["tokens"] == cells * genes
    assert figures["rss_growth_mib"] < 0.5 * arrow_mib
    assert job("load_from_disk")["loaded"] is False  # the same cap is too small to map the shards whole
    corpus = CellCorpus(tmp_path / "corpus")
    assert corpus.input_ids(cells - 1).tolist() == dataset[cells - 1]["input_ids"]


def test_an_empty_dataset_is_refused_and_leaves_nothing(tmp_path):
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32"))})
    folder = save({"input_ids": []}, tmp_path / "hf", features)
    with pytest.raises(LangCellInputError, match="holds 0 rows"):
        import_hf_dataset(folder, tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists() and not list(tmp_path.glob(".corpus.tmp-*"))


def test_empty_cells_and_the_later_geneformer_dictionary(tmp_path):
    corpus = import_hf_dataset(save({"input_ids": [[], [CLS_ID], [7, 9]]}, tmp_path / "hf"), tmp_path / "corpus")
    assert corpus.lengths.tolist() == [0, 0, 2] and corpus.input_ids(2).tolist() == [7, 9]
    later = save({"input_ids": [[2, 500, 17, 3], [2, 44, 3]]}, tmp_path / "later")  # <cls> 2 ... <eos> 3
    with pytest.raises(LangCellInputError, match="20,275-token dictionary"):
        import_hf_dataset(later, tmp_path / "none")
