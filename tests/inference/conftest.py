"""Inputs of the zero-shot tests: the official-layout tiny model and 50 real PBMCs with CL ids."""

from pathlib import Path

import anndata
import numpy as np
import pytest
import torch

from lightning_langcell.hub.official import load_official
from lightning_langcell.inference.zero_shot import encode_class_texts

# pbmc68k FACS labels -> Cell Ontology ids (what CELLxGENE would store beside them)
PBMC68K_CL_IDS = {
    "CD14+ Monocyte": "CL:0001054",
    "CD19+ B": "CL:0000236",
    "CD4+/CD25 T Reg": "CL:0000792",
    "CD4+/CD45RA+/CD25- Naive T": "CL:0000895",
    "CD56+ NK": "CL:0000623",
    "CD8+ Cytotoxic T": "CL:0000794",
    "CD8+/CD45RA+ Naive Cytotoxic": "CL:0000900",
    "Dendritic": "CL:0000451",
}


@pytest.fixture(scope="session")
def tiny_checkpoint(test_data_dir) -> Path:
    return test_data_dir / "langcell-official-tiny"


@pytest.fixture(scope="session")
def pbmc_h5ad(test_data_dir, tmp_path_factory) -> Path:
    """50 real PBMCs (cell 3 has filter_pass 0, cell 29 is empty) with ``cell_type_ontology_term_id``."""
    adata = anndata.read_h5ad(test_data_dir / "corpus_pbmc68k" / "pbmc_50cells.h5ad")
    adata.obs["cell_type_ontology_term_id"] = adata.obs["cell_type"].astype(str).map(PBMC68K_CL_IDS)
    path = tmp_path_factory.mktemp("pbmc") / "pbmc_50cells_cl.h5ad"
    adata.write_h5ad(path)
    return path


@pytest.fixture(autouse=True, scope="package")
def one_thread(single_torch_thread):
    with single_torch_thread():
        yield


@pytest.fixture(scope="module")
def fixture_dir(test_data_dir) -> Path:
    return test_data_dir / "langcell-official-tiny"


@pytest.fixture(scope="module")
def official(fixture_dir):
    """The official-layout tiny model, the fixture's inputs and expected outputs, its encoded class texts."""
    def array(name):
        return torch.from_numpy(np.load(fixture_dir / name))

    model = load_official(fixture_dir)
    inputs = {name: array(f"inputs/{name}.npy") for name in
              ("cell_input_ids", "cell_attention_mask", "text_input_ids", "text_attention_mask")}
    expected = {name: array(f"expected/{name}.npy") for name in
                ("ctc_probs", "ctm_match_prob", "ctm_probs", "final_probs", "pred", "cell_embedding")}
    classes = encode_class_texts(model, inputs["text_input_ids"], inputs["text_attention_mask"])
    return model, inputs, expected, classes
