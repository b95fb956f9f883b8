"""The data module masks genes by default at the official 15 % (what pre-training needs); every
recipe of a task that must not mask (classifiers, zero-shot, embedding) switches masking off."""

from pathlib import Path

import yaml

from lightning_langcell.data.datamodule import LangCellDataModule

REPO = Path(__file__).resolve().parents[2]
PRETRAINING = "LangCellPretraining"


def test_default_masks_at_the_official_rate():
    module = LangCellDataModule("unused.h5ad", texts=False)
    assert module.hparams.mgm_probability == 0.15
    assert module.collator(masked=True).mgm_probability == 0.15
    assert {"mgm_input_ids", "mgm_labels"} <= module.batch_fields()
    assert module.collator(masked=False).mgm_probability == 0.0  # prediction never masks


def test_masking_off_means_no_mgm_fields():
    for off in (0.0, None):
        module = LangCellDataModule("unused.h5ad", texts=True, mgm_probability=off)
        assert module.collator(masked=True).mgm_probability == 0.0
        assert module.batch_fields() == {"input_ids", "attention_mask", "index", "labels",
                                         "text_input_ids", "text_attention_mask", "text_ids"}


def test_every_recipe_states_its_masking():
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert len(recipes) >= 9
    for path in recipes:
        recipe = yaml.safe_load(path.read_text())
        probability = recipe["data"].get("mgm_probability", "unset")
        if recipe["model"]["class_path"].endswith(PRETRAINING):
            assert probability == 0.15, path.name
        else:
            assert probability == 0.0, f"{path.name} must switch masking off explicitly (data.mgm_probability: 0)"
