"""Cell and class texts: official form, aspects, precedence, overrides, text ids."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.text import CellTextBuilder

B_CELL = ("cell type: B cell. A lymphocyte of B lineage that is capable of B cell "
          "mediated immunity.; ")
NK_CELL = ("cell type: natural killer cell. A lymphocyte that can spontaneously kill a variety "
           "of target cells without prior antigenic activation via germline encoded activation "
           "receptors and also regulate immune responses via cytokine release and direct contact "
           "with other cells.; ")
BLOOD = "tissue: blood. A fluid that is composed of blood plasma and erythrocytes.; "
COVID = ("disease: COVID-19. A disease caused by infection with severe acute respiratory "
         "syndrome coronavirus 2.; ")


@pytest.fixture(scope="module")
def official(test_data_dir):
    folder = test_data_dir / "text_official_tiny" / "inputs"
    return (json.loads((folder / "class_ids.json").read_text()),
            json.loads((folder / "class_texts.json").read_text()))


def test_official_class_texts_exact(official):
    ids, texts = official
    builder = CellTextBuilder()
    assert [builder.class_text(term_id) for term_id in ids] == texts
    labels = ["B cell", "CD14-positive monocyte", "natural killer cell", "dendritic cell"]
    assert [builder.class_text(label) for label in labels] == texts
    assert builder.class_text("B cells") == texts[0] == B_CELL
    assert builder.missing_definitions == {}


def test_multi_aspect_cell_text():
    row = {"cell_type": "B cell", "cell_type_ontology_term_id": "CL:0000236",
           "tissue": "blood", "tissue_ontology_term_id": "UBERON:0000178",
           "disease": "COVID-19", "disease_ontology_term_id": "MONDO:0100096",
           "development_stage": "adult", "development_stage_ontology_term_id": "HsapDv:0000087"}
    builder = CellTextBuilder()
    with pytest.warns(UserWarning, match="development stage: 'adult'"):
        text = builder.cell_text(row)
    assert text == B_CELL + BLOOD + COVID + "development stage: adult; "
    assert builder.missing_definitions == {"development stage": ["adult"]}
    only_type = CellTextBuilder(aspects=("cell type", "tissue"))
    assert only_type.cell_text(row) == B_CELL + BLOOD


def test_id_column_wins_over_label():
    builder = CellTextBuilder()
    row = {"cell_type": "B cell", "cell_type_ontology_term_id": "CL:0000623"}
    assert builder.cell_text(row) == NK_CELL
    # an absent or 'unknown' id falls back to matching the label
    assert builder.cell_text({"cell_type": "B cell", "cell_type_ontology_term_id": "unknown"}) == B_CELL
    assert builder.cell_text({"cell_type": "B cell", "cell_type_ontology_term_id": np.nan}) == B_CELL
    # an id alone gives the ontology label
    assert builder.cell_text({"cell_type_ontology_term_id": "CL_0000236"}) == B_CELL


def test_synonym_and_free_text_match():
    builder = CellTextBuilder()
    assert builder.cell_text({"cell_type": "NK cell"}) == NK_CELL
    assert builder.cell_text({"cell_type": "B_cells", "tissue": "Blood"}) == B_CELL + BLOOD


def test_type2text_override_dict_and_json(tmp_path):
    overrides = {"B cell": "My B definition.", "CL:0000623": "My NK definition.",
                 "CD14+ Mono": "Classical monocyte."}
    path = tmp_path / "type2text.json"
    path.write_text(json.dumps(overrides))
    for type2text in (overrides, path, str(path)):
        builder = CellTextBuilder(type2text=type2text)
        assert builder.class_text("CL:0000236") == "cell type: B cell. My B definition.; "
        assert builder.class_text("b cells") == "cell type: B cell. My B definition.; "
        assert builder.class_text("NK cell") == "cell type: natural killer cell. My NK definition.; "
        # a label unknown to the ontology keeps its own name
        assert builder.class_text("CD14+ Mono") == "cell type: CD14+ Mono. Classical monocyte.; "
        # override by label beats the id column's ontology definition
        row = {"cell_type": "CD14+ Mono", "cell_type_ontology_term_id": "CL:0001054"}
        assert builder.cell_text(row) == "cell type: CD14-positive monocyte. Classical monocyte.; "
        assert builder.missing_definitions == {}


def test_type2text_rejects_full_texts_and_bad_types(tmp_path):
    with pytest.raises(LangCellInputError, match="definitions only"):
        CellTextBuilder(type2text={"B cell": B_CELL})
    with pytest.raises(LangCellInputError, match="map strings"):
        CellTextBuilder(type2text={"B cell": 3})
    with pytest.raises(LangCellInputError, match="does not exist"):
        CellTextBuilder(type2text=tmp_path / "missing.json")


def test_missing_definition_form_report_and_single_warning():
    builder = CellTextBuilder()
    with pytest.warns(UserWarning, match="1 label\\(s\\) have no definition"):
        assert builder.class_text("Astrocyte1") == "cell type: Astrocyte1; "
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same label does not warn twice
        assert builder.class_text("Astrocyte1") == "cell type: Astrocyte1; "
    assert builder.missing_definitions == {"cell type": ["Astrocyte1"]}
    with pytest.raises(LangCellInputError, match="No class text"):
        builder.class_text("unknown")


def test_text_ids_group_identical_texts():
    obs = pd.DataFrame({
        "cell_type": ["B cells", "NK cell", "B cell", "natural killer cell", "B cell", None],
        "cell_type_ontology_term_id": [None, None, None, None, "CL:0000623", "CL:0000236"],
        "tissue": ["blood", "blood", "blood", "blood", "blood", "lung"],
    }).astype("category")
    builder = CellTextBuilder()
    texts, ids = builder.text_ids_for(obs)
    lung = "tissue: lung. Respiration organ that develops as an outpocketing of the esophagus.; "
    assert texts == [B_CELL + BLOOD, NK_CELL + BLOOD, B_CELL + lung]
    assert ids.dtype == np.int32 and ids.tolist() == [0, 1, 0, 1, 1, 2]  # 4 bytes a cell
    assert builder.texts_for(obs) == [texts[i] for i in ids]
    assert builder.texts_for(obs) == [builder.cell_text(row) for row in obs.to_dict("records")]
    # stable across calls and with many repeated rows
    big = pd.concat([obs] * 1000, ignore_index=True)
    texts_big, ids_big = builder.text_ids_for(big)
    assert texts_big == texts and np.array_equal(ids_big, np.tile(ids, 1000))


def test_column_mapping_and_missing_columns():
    obs = pd.DataFrame({"bulk_labels": ["B cell", "NK cell"]})
    builder = CellTextBuilder(columns={"cell_type": "bulk_labels"})
    assert builder.texts_for(obs) == [B_CELL, NK_CELL]
    with pytest.raises(LangCellInputError, match="none of the annotation columns"):
        CellTextBuilder().texts_for(obs)
    with pytest.raises(LangCellInputError, match="Unknown or no text aspects"):
        CellTextBuilder(aspects=("cell kind",))
