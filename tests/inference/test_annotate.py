"""``annotate``: AnnData in, annotated copy out; values equal the official per-class computation."""

import hashlib

import anndata
import numpy as np
import pytest
import torch

from lightning_langcell.data.collate import pad_token_lists
from lightning_langcell.errors import LangCellInputError
from lightning_langcell.hub.official import load_official
from lightning_langcell.inference import annotate, per_class_match_logits
from lightning_langcell.inference.annotate import check_gene_vocabulary
from lightning_langcell.inference.classes import candidate_classes
from lightning_langcell.models import LangCellConfig, LangCellModel
from lightning_langcell.models.zero_shot_scores import zero_shot_scores
from lightning_langcell.text import load_text_tokenizer, tokenize_texts
from lightning_langcell.tokenization import CLS_ID, CellTokenizer, GeneVocabulary


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def annotated(pbmc_h5ad, tiny_checkpoint, tmp_path_factory):
    before = _sha256(pbmc_h5ad)
    output = tmp_path_factory.mktemp("out") / "annotated.h5ad"
    result = annotate(pbmc_h5ad, tiny_checkpoint, batch_size=4, output=output)
    assert _sha256(pbmc_h5ad) == before  # the input file is untouched
    return result, output


def test_output_contents(annotated, pbmc_h5ad):
    result, output = annotated
    source = anndata.read_h5ad(pbmc_h5ad)
    classes = sorted(source.obs["cell_type"].unique())  # 8 FACS labels, texts from their CL ids
    assert len(classes) == 8
    assert list(result.uns["langcell_classes"]) == classes
    probs = result.obsm["langcell_probabilities"]
    assert probs.shape == (50, 8) and probs.dtype == np.float32
    scored = ~np.isnan(probs).any(axis=1)
    assert scored.tolist() == [i not in (3, 29) for i in range(50)]  # 3: filter_pass 0; 29: no gene, no label
    np.testing.assert_allclose(probs[scored].sum(axis=1), 1.0, atol=1e-5)
    prediction = result.obs["langcell_prediction"]
    assert list(prediction.cat.categories) == classes and prediction.isna().tolist() == (~scored).tolist()
    assert (prediction[scored].astype(str).to_numpy() == np.array(classes)[probs[scored].argmax(1)]).all()
    np.testing.assert_allclose(result.obs["langcell_confidence"][scored], probs[scored].max(1))
    embedding = result.obsm["X_langcell"]
    assert embedding.shape == (50, 256)
    np.testing.assert_allclose(np.linalg.norm(embedding[scored], axis=1), 1.0, atol=1e-5)
    info = result.uns["langcell"]
    assert info["alpha"] == 0.1 and info["n_cells_scored"] == 48 and info["n_cells_not_scored"] == 2
    truth = result.obs["cell_type"].astype(str).to_numpy()
    accuracy = np.mean(prediction[scored].astype(str).to_numpy() == truth[scored])
    assert info["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert info["metrics"]["n_evaluated"] == 48
    written = anndata.read_h5ad(output)
    np.testing.assert_array_equal(written.obsm["langcell_probabilities"], probs)
    assert (written.X != source.X).nnz == 0 and list(written.obs_names) == list(source.obs_names)
    assert written.uns["langcell"]["metrics"]["accuracy"] == pytest.approx(accuracy)


def test_values_equal_the_official_per_class_computation(annotated, pbmc_h5ad, tiny_checkpoint):
    result, _ = annotated
    cells = [0, 1, 28, 49]
    model = load_official(tiny_checkpoint)
    tokens = CellTokenizer(max_genes=2047).tokenize(pbmc_h5ad)  # cells 3 (filter_pass 0) and 29 (empty) skipped
    input_ids, mask = pad_token_lists([tokens[c - (c > 3) - (c > 29)] for c in cells], CLS_ID, 2048)
    texts = candidate_classes(obs=anndata.read_h5ad(pbmc_h5ad).obs).texts
    encoded = tokenize_texts(texts, load_text_tokenizer(tiny_checkpoint / "tokenizer"))
    with torch.no_grad():
        hidden, cell_embedding = model.encode_cells(input_ids, mask)
        text_embedding = torch.cat([model.encode_texts(ids[:int(m.sum())][None], None)[1]
                                    for ids, m in zip(encoded["input_ids"], encoded["attention_mask"])])
        logits = per_class_match_logits(model, encoded["input_ids"], encoded["attention_mask"], hidden, mask)
    expected = zero_shot_scores(cell_embedding, text_embedding, logits)
    np.testing.assert_allclose(result.obsm["langcell_probabilities"][cells], expected.final_probs.numpy(), atol=1e-5)
    np.testing.assert_allclose(result.obsm["X_langcell"][cells], cell_embedding.numpy(), atol=1e-5)


def test_in_memory_input_is_not_modified(pbmc_h5ad, tiny_checkpoint):
    adata = anndata.read_h5ad(pbmc_h5ad)[:12].copy()
    obs_before = adata.obs.copy()
    result = annotate(adata, tiny_checkpoint, classes=["CL:0000236", "CL:0000623", "CL:0001054"], top_k=3)
    exact = annotate(adata, tiny_checkpoint, classes=["CL:0000236", "CL:0000623", "CL:0001054"])
    assert list(adata.obs.columns) == list(obs_before.columns) and not adata.obsm and not adata.uns
    assert result is not adata and "langcell_prediction" in result.obs
    np.testing.assert_array_equal(result.obsm["langcell_probabilities"], exact.obsm["langcell_probabilities"])
    # the FACS labels ("CD19+ B", ...) match no CL label or synonym: no cell is evaluated
    assert result.uns["langcell"]["metrics"]["n_evaluated"] == 0


def test_alpha_one_is_ctc_only(pbmc_h5ad, tiny_checkpoint):
    adata = anndata.read_h5ad(pbmc_h5ad)[:6].copy()
    classes = ["CL:0000236", "CL:0000623", "CL:0001054"]
    ctc = annotate(adata, tiny_checkpoint, classes=classes, alpha=1.0)
    model = load_official(tiny_checkpoint)
    encoded = tokenize_texts(candidate_classes(classes).texts, load_text_tokenizer(tiny_checkpoint / "tokenizer"))
    with torch.no_grad():
        text_embedding = model.encode_texts(encoded["input_ids"], encoded["attention_mask"])[1].numpy()
    scored = [0, 1, 2, 4, 5]  # cell 3: filter_pass 0
    logits = torch.from_numpy(ctc.obsm["X_langcell"][scored] @ text_embedding.T / 0.05)
    np.testing.assert_allclose(ctc.obsm["langcell_probabilities"][scored], logits.softmax(-1).numpy(), atol=1e-5)
    assert ctc.uns["langcell"]["alpha"] == 1.0 and ctc.uns["langcell"]["top_k"] == "none"


def test_bad_inputs(pbmc_h5ad, tiny_checkpoint, tmp_path):
    adata = anndata.read_h5ad(pbmc_h5ad)
    with pytest.raises(LangCellInputError, match=r"no text.*\['Flurbo cell'\]"):
        annotate(adata, tiny_checkpoint, classes=["B cell", "Flurbo cell"])
    no_ids = adata.copy()
    del no_ids.var["ensembl_id"]
    no_ids.var_names = [f"gene{i}" for i in range(no_ids.n_vars)]
    with pytest.raises(LangCellInputError, match="None of the 765 genes"):
        annotate(no_ids, tiny_checkpoint)
    filtered = adata.copy()
    filtered.obs["filter_pass"] = 0
    with pytest.raises(LangCellInputError, match="No cell left to annotate after filtering"):
        annotate(filtered, tiny_checkpoint)
    with pytest.raises(LangCellInputError, match="is the input file"):
        annotate(pbmc_h5ad, tiny_checkpoint, output=pbmc_h5ad, overwrite=True)
    existing = tmp_path / "exists.h5ad"
    existing.write_bytes(b"")
    with pytest.raises(LangCellInputError, match="exists"):
        annotate(pbmc_h5ad, tiny_checkpoint, output=existing)
    with pytest.raises(LangCellInputError, match="Label column 'bulk' is not in obs"):
        annotate(adata, tiny_checkpoint, label_column="bulk")


def test_gene_vocabulary_mismatch_is_refused(pbmc_h5ad):
    config = LangCellConfig.preset("tiny", cell={"vocab_size": 20275})  # Geneformer V2 ids
    model = LangCellModel(config)
    with pytest.raises(LangCellInputError, match="20275"):
        annotate(anndata.read_h5ad(pbmc_h5ad), model)
    bundled = GeneVocabulary.bundled()
    with pytest.raises(LangCellInputError, match="token ids would mean other genes"):
        check_gene_vocabulary(LangCellModel(LangCellConfig.preset("tiny")), len(bundled), "0" * 64, bundled)
