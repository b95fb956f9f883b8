"""Classification tasks: one class and k_shot 0 are refused at setup, test_results.json reports the
split actually used, runs with another k or seed get their own folder, and a checkpoint's training
lengths are recorded by pre-training and used by the tasks when data.max_length is unset."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_langcell.data.datamodule import LangCellDataModule
from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tasks.classify import CellClassificationTask
from lightning_langcell.tasks.run_folder import dataset_name

TINY_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0"]
BUNDLED = "checkpoints/langcell-tiny-bundled"


@pytest.fixture()
def training_steps(monkeypatch):
    calls = []
    original = CellClassificationTask.training_step

    def counted(self, batch, batch_idx):
        calls.append(batch_idx)
        return original(self, batch, batch_idx)

    monkeypatch.setattr(CellClassificationTask, "training_step", counted)
    return calls


@pytest.mark.parametrize(("recipe", "extra"), [("few_shot.yaml", ["--data.k_shot", "2"]),
                                               ("linear_probe.yaml", []), ("finetune.yaml", [])])
def test_a_single_class_is_refused_at_setup(run_cli, training_steps, recipe, extra):
    # obs["organism"] is "human" for every cell: one class
    with pytest.raises(LangCellInputError, match=r"at least 2 classes.*every labelled cell is 'human'"):
        run_cli("fit", recipe, *TINY_FIT, *extra, "--data.label_column", "organism")
    assert training_steps == []


def test_k_shot_zero_is_refused(run_cli, repo_root):
    with pytest.raises(LangCellInputError, match=r"k_shot 0.*data.k_shot null"):
        LangCellDataModule(str(repo_root / "data/cells/pbmc3k.h5ad"), k_shot=0)
    with pytest.raises(LangCellInputError, match="at least 1 training cell per class"):
        run_cli("fit", "few_shot.yaml", "--data.k_shot", "0", *TINY_FIT)


def test_dataset_names_of_run_folders():
    assert dataset_name("data/cells/pbmc3k.h5ad") == "pbmc3k"
    assert dataset_name(["a/x.h5ad", "b/y.h5ad"]) == "x+y"
    assert dataset_name("corpora/scLibrary") == "scLibrary" and dataset_name(None) is None


def test_few_shot_runs_with_another_dataset_k_or_seed_keep_their_folders(run_cli, tmp_path):
    run_cli("fit", "few_shot.yaml", "--data.k_shot", "2", *TINY_FIT)
    first = tmp_path / "runs/few_shot/pbmc68k_reduced/k2_seed0/checkpoints/last.ckpt"
    before = first.read_bytes()
    run_cli("fit", "few_shot.yaml", "--data.k_shot", "3", *TINY_FIT)
    run_cli("fit", "few_shot.yaml", "--data.k_shot", "2", "--data.seed", "1", "--seed_everything", "1", *TINY_FIT)
    run_cli("fit", "few_shot.yaml", "--data.k_shot", "2", *TINY_FIT, data="data/cells/pbmc3k.h5ad")
    runs = tmp_path / "runs/few_shot"
    assert sorted(p.name for p in (runs / "pbmc68k_reduced").iterdir()) == ["k2_seed0", "k2_seed1", "k3_seed0"]
    assert (runs / "pbmc3k/k2_seed0/checkpoints/last.ckpt").is_file()
    assert first.read_bytes() == before
    cli = run_cli("test", "few_shot.yaml", "--data.k_shot", "2", "--ckpt_path", str(first))
    results = json.loads((runs / "pbmc68k_reduced/k2_seed0/test_results.json").read_text())
    # the split actually used: k per class for training, the other labelled cells 10% / 90%
    assert results["split_fractions"] is None and results["k_shot"] == 2
    assert results["split_used"] == {"train": "2 labelled cells per class (seeded)",
                                     "val": "10% of the other labelled cells (stratified, seeded)",
                                     "test": "90% of the other labelled cells (stratified, seeded)"}
    sizes = results["split_sizes"]
    rest = sizes["val"] + sizes["test"]
    assert sizes["train"] == 2 * len(cli.datamodule.classes) and rest == 700 - sizes["train"]
    assert sizes["val"] == pytest.approx(0.1 * rest, abs=len(cli.datamodule.classes))


def test_pretraining_records_its_lengths_and_tasks_default_to_them(run_cli, repo_root, tmp_path):
    tokenizer = str(repo_root / BUNDLED / "text_tokenizer")
    run_cli("fit", "pretrain.yaml", *TINY_FIT, "--data.max_length", "48", "--data.text_max_length", "40",
            "--data.text_tokenizer", tokenizer)
    checkpoint = tmp_path / "runs/pretrain/checkpoints/last.ckpt"
    config = torch.load(checkpoint, weights_only=True, map_location="cpu")["langcell_config"]
    assert (config["max_length"], config["text_max_length"]) == (48, 40)
    start = ["--model.init_args.init_from", str(checkpoint), "--data.max_length", "null"]
    few_shot = run_cli("fit", "few_shot.yaml", "--data.k_shot", "2", *TINY_FIT, *start)
    assert few_shot.datamodule.hparams.max_length == 48
    assert few_shot.model.class_text_tokens["input_ids"].shape[1] <= 40  # class texts at the trained length
    probe = run_cli("fit", "linear_probe.yaml", *TINY_FIT, *start)
    assert probe.datamodule.hparams.max_length == 48
    chosen = run_cli("fit", "finetune.yaml", *TINY_FIT, *start[:2], "--data.max_length", "32")
    assert chosen.datamodule.hparams.max_length == 32
    # the bundled checkpoint records how it was trained: 256 cell tokens, 128 text tokens
    bundled = run_cli("fit", "finetune.yaml", *TINY_FIT, "--model.init_args.init_from", str(repo_root / BUNDLED),
                      "--data.max_length", "null")
    assert bundled.datamodule.hparams.max_length == 256


def test_a_preset_with_overrides_changes_only_the_named_fields(run_cli):
    from lightning_langcell.models import LangCellConfig
    from lightning_langcell.tasks.base import build_model, model_config

    tiny = LangCellConfig.preset("tiny", text={"vocab_size": 100}).to_dict()
    changed = model_config({"preset": "tiny", "cell": {"attention_probs_dropout_prob": 0.0}}, 100).to_dict()
    assert changed["cell"]["attention_probs_dropout_prob"] == 0.0 != tiny["cell"]["attention_probs_dropout_prob"]
    changed["cell"]["attention_probs_dropout_prob"] = tiny["cell"]["attention_probs_dropout_prob"]
    assert changed == tiny
    with pytest.raises(LangCellInputError, match=r"Unknown cell encoder keys \['attention_dropout'\]"):
        build_model({"preset": "tiny", "cell": {"attention_dropout": 0.0}})
    cli = run_cli("fit", "pretrain.yaml", *TINY_FIT, "--model.init_args.model",
                  '{"preset": "tiny", "cell": {"attention_probs_dropout_prob": 0.0}}')
    assert cli.model.model.config.cell.attention_probs_dropout_prob == 0.0
    assert cli.model.model.config.cell.num_hidden_layers == tiny["cell"]["num_hidden_layers"]
