"""Cell-encoder classifier: linear probe and fine-tuning recipes, frozen weights, bad inputs."""

import copy

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from classification_checks import LUNG, PBMC, read_results, reference_metrics

from lightning_langcell.data.datamodule import LangCellDataModule
from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tasks.base import build_model
from lightning_langcell.tasks.cell_classifier import CellTypeClassifier

TINY_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "3"]


@pytest.fixture(scope="module")
def pbmc(repo_root, corpus_cache) -> LangCellDataModule:
    data = LangCellDataModule(
        str(repo_root / PBMC), cache_dir=str(corpus_cache), texts=False, split=(0.67, 0.0, 0.33),
        batch_size=16, max_length=64,
    )
    data.setup("fit")
    return data


def _check_results(run_dir, data, train_fraction):
    results, predictions = read_results(run_dir)
    assert results["classes"] == data.classes and results["seed"] == 0
    assert results["split_fractions"] == [train_fraction, 0.0, 0.33]
    sizes = results["split_sizes"]
    assert sizes["val"] == 0 and sizes["train"] + sizes["test"] == 700
    assert sizes["train"] == pytest.approx(train_fraction * 700, abs=10)  # 2:1, rounded per class
    assert sum(results["train_cells_per_class"].values()) == sizes["train"]
    assert min(results["test_cells_per_class"].values()) >= 1
    np.testing.assert_array_equal(predictions["cell_index"], data.splits["test"])
    expected = reference_metrics(predictions["label"], predictions["prediction"])
    for name, value in expected.items():
        assert results["metrics"][name] == pytest.approx(value, abs=1e-6), name
    return results


def test_finetune_recipe_fit_and_test(run_cli, tmp_path):
    cli = run_cli("fit", "finetune.yaml", *TINY_FIT)
    assert all(p.requires_grad for p in cli.model.parameters())  # full fine-tuning
    optimizer = cli.trainer.optimizers[0]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.001, 0.0]
    # after 3 steps the schedule stands at step 3 of the 500 linear warm-up steps: lr = 5e-5 · 4/500
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-5 * 4 / 500)

    checkpoint = str(tmp_path / "runs/finetune/pbmc68k_reduced/seed0/checkpoints/last.ckpt")
    cli = run_cli("test", "finetune.yaml", "--ckpt_path", checkpoint)
    results = _check_results(tmp_path / "runs/finetune/pbmc68k_reduced/seed0", cli.datamodule, 0.67)
    assert results["hyperparameters"]["features"] == "pooled" and not results["hyperparameters"]["freeze_encoder"]

    # annotating unlabelled cells: the classes come with the checkpoint; test cells get the
    # predictions the test run wrote
    cli = run_cli("predict", "finetune.yaml", "--data.label_column", "null", "--ckpt_path", checkpoint)
    assert cli.model.classes == results["classes"]
    batches = cli.trainer.predict_loop.predictions
    index = torch.cat([b["index"] for b in batches]).numpy()
    predicted = torch.cat([b["prediction"] for b in batches]).numpy()
    scores = torch.cat([b["scores"] for b in batches])
    assert sorted(index) == list(range(700)) and scores.shape == (700, 10)
    torch.testing.assert_close(scores.sum(1), torch.ones(700))
    _, tested = read_results(tmp_path / "runs/finetune/pbmc68k_reduced/seed0")
    by_cell = dict(zip(index.tolist(), predicted.tolist()))
    assert [by_cell[i] for i in tested["cell_index"]] == tested["prediction"].tolist()


def test_linear_probe_recipe_fit_and_test(run_cli, tmp_path):
    from lightning_langcell.hub.pretrained import save_pretrained

    torch.manual_seed(1)
    start = build_model("tiny")
    save_pretrained(start, tmp_path / "start")
    cli = run_cli("fit", "linear_probe.yaml", *TINY_FIT, "--model.init_args.init_from", str(tmp_path / "start"))
    assert cli.model.head.in_features == 64  # the tiny encoder's <cls> width
    # the probed encoder is the checkpoint's, unchanged by training
    trained = cli.model.cell_bert.state_dict()
    assert all(torch.equal(value, trained[key]) for key, value in start.cell_bert.state_dict().items())
    cli = run_cli("test", "linear_probe.yaml", "--ckpt_path", str(tmp_path / "runs/linear_probe/pbmc68k_reduced/seed0/checkpoints/last.ckpt"))
    _check_results(tmp_path / "runs/linear_probe/pbmc68k_reduced/seed0", cli.datamodule, 0.67)


@pytest.mark.parametrize("features", ["cls", "pooled", "embedding"])
def test_linear_probe_changes_only_the_head(pbmc, tmp_path, features):
    torch.manual_seed(0)
    task = CellTypeClassifier(model="tiny", features=features, freeze_encoder=True, learning_rate=5e-3,
                              weight_decay=0.0, warmup_steps=0, min_lr_ratio=1.0)
    before, after = _train_three_steps(task, pbmc, tmp_path)
    assert before.keys() == after.keys()
    encoder = [k for k in before if not k.startswith("head.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert not torch.equal(before["head.weight"], after["head.weight"])
    assert [k.startswith("cell_proj.") for k in encoder].count(True) == (2 if features == "embedding" else 0)
    task.train()
    assert task.head.training and not task.cell_bert.training  # frozen encoder: no dropout
    batch = next(iter(pbmc.test_dataloader()))
    features_out = task.cell_features(batch["input_ids"], batch["attention_mask"])
    assert features_out.shape[1] == task.head.in_features == (256 if features == "embedding" else 64)
    if features == "embedding":
        torch.testing.assert_close(features_out.norm(dim=1), torch.ones(len(features_out)))


def test_pooled_and_embedding_features_follow_the_model_pooling(pbmc, randomise):
    """The tiny preset mean-pools: ``pooled`` is the mean gene state, ``embedding`` equals the
    model's own ``encode_cells`` embedding; ``cls`` stays the <cls> state."""
    from lightning_langcell.models import LangCellConfig, LangCellModel

    torch.manual_seed(0)
    model = LangCellModel(LangCellConfig.preset("tiny")).eval()
    randomise(model)
    batch = next(iter(pbmc.test_dataloader()))
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        hidden, embedding = model.encode_cells(ids, mask)
        genes = mask[:, 1:, None].float()
        mean = (hidden[:, 1:] * genes).sum(1) / genes.sum(1)
        for features, expected in (("cls", hidden[:, 0]), ("pooled", mean), ("embedding", embedding)):
            task = CellTypeClassifier(model="tiny", features=features).eval()
            task.cell_bert.load_state_dict(model.cell_bert.state_dict())
            if task.cell_proj is not None:
                task.cell_proj.load_state_dict(model.cell_proj.state_dict())
            torch.testing.assert_close(task.cell_features(ids, mask), expected, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(hidden[:, 0], mean, atol=1e-3)


def test_finetuning_changes_the_encoder_and_the_head(pbmc, tmp_path):
    torch.manual_seed(0)
    task = CellTypeClassifier(model="tiny", learning_rate=1e-3, warmup_steps=0)
    before, after = _train_three_steps(task, pbmc, tmp_path)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    layers = [k for k in before if k.startswith("cell_bert.encoder.layer.") and k.endswith("weight")]
    assert layers and set(layers) <= changed and {"head.weight", "head.bias"} <= changed


def _train_three_steps(task, data, root):
    """State dicts before and after 3 training steps of ``task`` (head built beforehand)."""
    task.set_classes(data.classes)
    before = copy.deepcopy(task.state_dict())
    trainer = pl.Trainer(accelerator="cpu", max_steps=3, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         use_distributed_sampler=False, default_root_dir=root)
    trainer.fit(task, datamodule=data)
    return before, task.state_dict()


def test_finetune_loss_finite_and_decreasing_on_a_fixed_batch(pbmc):
    torch.manual_seed(0)
    task = CellTypeClassifier(model="tiny")
    task.set_classes(pbmc.classes)
    task.eval()
    batch = next(iter(pbmc.train_dataloader()))
    optimizer = torch.optim.Adam(task.parameters(), lr=1e-3)
    history = []
    for _ in range(5):
        loss = task.losses(task(batch), batch["labels"])["cross_entropy"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    assert np.isfinite(history).all() and (np.diff(history) < 0).all(), history
    assert history[0] == pytest.approx(np.log(len(pbmc.classes)), abs=0.05)  # small-init head: uniform


def test_a_class_with_one_cell_is_refused(run_cli):
    with pytest.raises(LangCellInputError, match=r"fewer than 2 labelled cells: 'Ciliated' \(1 cell\)"):
        run_cli("fit", "finetune.yaml", *TINY_FIT, data=LUNG)


def test_no_labels_are_refused(run_cli):
    with pytest.raises(LangCellInputError, match="needs labelled cells.*data.label_column"):
        run_cli("fit", "linear_probe.yaml", "--data.label_column", "null", *TINY_FIT)
