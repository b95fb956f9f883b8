"""Gene ids -> vocabulary: Ensembl (versioned), symbols, mouse orthologs, summing, report counts."""

import numpy as np
import pytest

from lightning_langcell.tokenization import CellTokenizer, resolve_genes, strip_version

from tokenization_helpers import counts_adata, expected_tokens

ACTB, CD3E, MS4A1, GAPDH = "ENSG00000075624", "ENSG00000198851", "ENSG00000156738", "ENSG00000111640"
MT_TF = "ENSG00000210049"  # in gene_name_id_dict, not in the vocabulary
ACTMAP = "ENSG00000188493"  # symbol known only from GENCODE (bundled extra map)


def test_strip_version():
    assert strip_version("ENSG00000075624.17") == ACTB
    assert strip_version("ENSG00000182378.14_PAR_Y") == "ENSG00000182378"
    assert strip_version("ENSMUSG00000029580.3") == "ENSMUSG00000029580"
    assert strip_version("ACTB") == "ACTB"


def test_human_symbols_and_versioned_ids(vocabulary):
    var_names = ["ACTB", "CD3E", "ENSG00000156738.18", "MT-TF", "NOT_A_GENE", "ACTMAP", "ENSG00000111640"]
    x = np.array([[5, 0, 2, 7, 9, 1, 3], [0, 4, 0, 0, 1, 0, 0]])
    adata = counts_adata(x, var_names)
    tokenizer = CellTokenizer()
    tokens = tokenizer.tokenize(adata)
    report = tokenizer.report.as_dict()
    assert report["species"] == "human" and report["gene_id_source"] == "var_names"
    assert report["genes_total"] == 7
    assert report["genes_mapped_by_ensembl"] == 2  # versioned MS4A1, GAPDH
    assert report["genes_mapped_by_symbol"] == 3  # ACTB, CD3E, ACTMAP (GENCODE extra)
    assert report["genes_outside_vocabulary"] == 1  # MT-TF
    assert report["genes_unmapped"] == 1 and report["unmapped_examples"] == ["NOT_A_GENE"]
    n_counts = x.sum(axis=1)  # no obs["n_counts"]: totals over ALL genes, unmapped ones included
    genes = [ACTB, CD3E, MS4A1, MT_TF, "-", ACTMAP, GAPDH]
    assert tokens[0].tolist() == expected_tokens(vocabulary, genes, x[0], n_counts[0])
    assert tokens[1].tolist() == [vocabulary.token_to_id[CD3E]]


def test_id_columns_take_precedence_and_blank_ids_fall_back_to_symbols():
    var = {"ensembl_id": [ACTB, "", None, "ENSG00000198851.3"], "feature_id": ["x", "y", "z", "w"]}
    adata = counts_adata(np.ones((1, 4)), ["a", "GAPDH", "MS4A1", "b"], var=var)
    mapping = resolve_genes(adata.var, CellTokenizer().vocabulary)
    assert mapping.id_source.startswith("var['ensembl_id']")
    assert mapping.counts()["genes_mapped_by_ensembl"] == 2 and mapping.counts()["genes_mapped_by_symbol"] == 2
    cellxgene = counts_adata(np.ones((1, 2)), ["r1", "r2"], var={"feature_id": [GAPDH, ACTB]})
    assert resolve_genes(cellxgene.var, CellTokenizer().vocabulary).id_source == "var['feature_id']"


def test_mouse_ids_and_symbols_map_through_orthologs(vocabulary):
    var_names = ["ENSMUSG00000029580", "Cd3e", "Ms4a1", "Gm_unknown", "Gapdh"]
    x = np.array([[3, 1, 0, 4, 2]])
    adata = counts_adata(x, var_names, obs={"n_counts": [100.0]})
    tokenizer = CellTokenizer()
    tokens = tokenizer.tokenize(adata)[0]
    report = tokenizer.report
    assert report.species == "mouse"
    assert report.genes_mapped_by_ortholog == 4 and report.genes_unmapped == 1
    assert tokens.tolist() == expected_tokens(vocabulary, [ACTB, CD3E, MS4A1, "-", GAPDH], x[0], 100.0)
    # forcing human: mouse symbols do not map, the mouse Ensembl id still does
    human = CellTokenizer(species="human")
    human.tokenize(adata)
    assert human.report.genes_mapped_by_ortholog == 1 and human.report.genes_unmapped == 4


def test_genes_reaching_one_token_are_summed(vocabulary):
    """'PISD'/'Pisd'-style duplicates: distinct var_names sharing an Ensembl id -> one summed token."""
    var = {"ensembl_id": [ACTB, ACTB, CD3E, GAPDH]}
    x = np.array([[2, 3, 4, 1], [0, 6, 1, 1]])
    adata = counts_adata(x, ["ACTB_a", "ACTB_b", "CD3E", "GAPDH"], var=var, obs={"n_counts": [50.0, 40.0]})
    tokenizer = CellTokenizer()
    tokens = tokenizer.tokenize(adata)
    assert tokenizer.report.genes_summed_into_shared_token == 1
    assert tokens[0].tolist() == expected_tokens(vocabulary, [ACTB, CD3E, GAPDH], [5, 4, 1], 50.0)
    assert tokens[1].tolist() == expected_tokens(vocabulary, [ACTB, CD3E, GAPDH], [6, 1, 1], 40.0)
    assert len(set(tokens[0].tolist())) == len(tokens[0])


def test_mouse_paralogs_reaching_one_human_gene_are_summed(vocabulary):
    # 1190005I06Rik and Gm27021 share the human ortholog ENSG00000154102
    adata = counts_adata(np.array([[1, 2, 3]]), ["1190005I06Rik", "Gm27021", "Actb"], obs={"n_counts": [10.0]})
    tokens = CellTokenizer(species="mouse").tokenize(adata)[0]
    assert tokens.tolist() == expected_tokens(vocabulary, ["ENSG00000154102", ACTB], [3, 3], 10.0)


def test_real_symbols_map_like_the_official_fixture(official_dir):
    """pbmc68k fixture genes as symbols: the same 690 / 64 / 11 split as the official mapping."""
    import anndata

    adata = anndata.read_h5ad(official_dir / "real_pbmc68k_50cells.h5ad")
    by_symbol = counts_adata(adata.X.toarray(), adata.var["gene_symbol"].astype(str))
    mapping = resolve_genes(by_symbol.var, CellTokenizer().vocabulary)
    counts = mapping.counts()
    assert (counts["genes_mapped_by_symbol"], counts["genes_unmapped"], counts["genes_outside_vocabulary"]) == (690, 64, 11)
    assert mapping.token_id.dtype == np.int32
    mapped = mapping.token_id >= 0
    vocabulary = CellTokenizer().vocabulary
    assert [vocabulary.id_to_token[t] for t in mapping.token_id[mapped]] == list(adata.var["ensembl_id"][mapped])


def test_bad_species_is_refused():
    with pytest.raises(ValueError, match="species"):
        CellTokenizer(species="zebrafish")
