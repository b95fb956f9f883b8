"""Few-shot LangCell: the recipe through the CLI (fit, then test), losses and scores, bad inputs."""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from classification_checks import LUNG, PBMC, read_results, reference_metrics

from lightning_langcell.data.datamodule import LangCellDataModule
from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tasks.few_shot import STILL_MOVEMENT, FewShotLangCell, class_match_logits

K = 3
TINY_FIT = ["--trainer.max_epochs", "1", "--trainer.limit_val_batches", "1", "--data.batch_size", "12"]


@pytest.fixture(scope="module")
def pbmc_k_shot(repo_root, corpus_cache) -> LangCellDataModule:
    data = LangCellDataModule(
        str(repo_root / PBMC), cache_dir=str(corpus_cache), k_shot=K, batch_size=12, max_length=64
    )
    data.setup("fit")
    return data


@pytest.fixture(scope="module")
def task_and_batch(pbmc_k_shot):
    torch.manual_seed(0)
    task = FewShotLangCell(model="tiny")
    task.set_classes(pbmc_k_shot.classes, pbmc_k_shot.class_texts())
    return task, next(iter(pbmc_k_shot.train_dataloader()))


def test_fit_then_test_from_the_command_line(run_cli, tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fitted = run_cli("fit", "few_shot.yaml", "--data.k_shot", str(K), *TINY_FIT)
    # the recipe's learning rate moves the model: no "left the model where it started" note
    assert fitted.model.movement > 100 * STILL_MOVEMENT
    assert not [w for w in caught if "where it started" in str(w.message)]
    checkpoint = tmp_path / "runs/few_shot/pbmc68k_reduced/k3_seed0/checkpoints/last.ckpt"
    saved = torch.load(checkpoint, weights_only=True, map_location="cpu")
    assert len(saved["cell_classes"]["classes"]) == 10 and len(saved["cell_classes"]["train_cells"]) == 10 * K
    # the fine-tuned LangCell model loads on its own (e.g. for zero-shot annotation)
    from lightning_langcell.hub.loading import load_model

    assert saved["langcell_config"]["cell"]["hidden_size"] == 64  # the model's config travels along
    reloaded = load_model(checkpoint).state_dict()
    assert all(torch.equal(value, saved["state_dict"][f"model.{key}"]) for key, value in reloaded.items())

    cli = run_cli("test", "few_shot.yaml", "--data.k_shot", str(K), "--ckpt_path", str(checkpoint))
    results, predictions = read_results(tmp_path / "runs/few_shot/pbmc68k_reduced/k3_seed0")
    data = cli.datamodule

    # k cells of every class in training; val + test = everything else; test = the predictions
    assert results["train_cells_per_class"] == dict.fromkeys(data.classes, K)
    assert results["split_sizes"]["train"] == 10 * K
    assert sum(results["split_sizes"].values()) == 700
    assert results["classes"] == data.classes and results["k_shot"] == K
    assert results["seed"] == 0 and results["global_seed"] == 0
    np.testing.assert_array_equal(predictions["cell_index"], np.sort(data.splits["test"]))
    assert results["evaluated_cells"] == results["split_sizes"]["test"] == len(predictions["label"])
    assert sum(results["test_cells_per_class"].values()) == results["split_sizes"]["test"]
    assert not set(data.splits["train"]) & set(predictions["cell_index"])
    assert (predictions["label_name"] == np.array(data.classes)[predictions["label"]]).all()

    # the reported metrics are those of the written predictions, and were logged
    expected = reference_metrics(predictions["label"], predictions["prediction"])
    for name, value in expected.items():
        assert results["metrics"][name] == pytest.approx(value, abs=1e-6), name
        assert cli.trainer.callback_metrics[f"test/{name}"].item() == pytest.approx(value, abs=1e-6)

    # testing with another k would evaluate on training cells: refused
    with pytest.raises(LangCellInputError, match="were training cells of the checkpoint"):
        run_cli("test", "few_shot.yaml", "--data.k_shot", "1", "--ckpt_path", str(checkpoint))


def test_a_learning_rate_that_leaves_the_model_where_it_started_is_noted(run_cli):
    with pytest.warns(UserWarning, match="left the model where it started") as caught:
        fitted = run_cli("fit", "few_shot.yaml", "--data.k_shot", "1", "--model.init_args.learning_rate", "0",
                         "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0")
    assert fitted.model.movement == 0.0
    message = next(str(w.message) for w in caught if "where it started" in str(w.message))
    assert "learning rate 0" in message and "model.init_args.learning_rate" in message


def test_losses_and_scores_match_their_definitions(task_and_batch):
    task, batch = task_and_batch
    task.eval()
    with torch.no_grad():
        scores = task(batch)
        losses = task.losses(scores, batch["labels"])
        hidden, cells = task.model.encode_cells(batch["input_ids"], batch["attention_mask"])
        text_ids, text_mask = task._class_tokens()
        _, texts = task.model.encode_texts(text_ids, text_mask)
        # one fusion pass per (cell, class) pair, without shared keys/values
        pairs = torch.stack([
            torch.cat([
                task.model.match_logits(text_ids[c : c + 1], text_mask[c : c + 1], hidden[b : b + 1],
                                        batch["attention_mask"][b : b + 1])
                for c in range(len(task.classes))
            ])
            for b in range(len(cells))
        ])
    torch.testing.assert_close(class_match_logits(task.model, hidden, batch["attention_mask"], text_ids, text_mask),
                               pairs, atol=1e-5, rtol=1e-5)
    # evaluation (no gradients) goes through the zero-shot engine, training through the
    # differentiable per-class passes: the same scores
    training_path = task(batch)
    for name in ("match_prob", "final_probs"):
        torch.testing.assert_close(getattr(training_path, name).detach(), getattr(scores, name), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(training_path.ctc_logits.detach(), cells @ texts.T / 0.05)
    torch.testing.assert_close(scores.ctc_logits.softmax(-1), (cells @ texts.T / 0.05).softmax(-1))
    labels = batch["labels"]
    assert losses["ctc"].item() == pytest.approx(F.cross_entropy(cells @ texts.T / 0.05, labels).item(), rel=1e-5)
    match = pairs.softmax(-1)[..., 1]
    ctm_true_class = match.softmax(-1)[torch.arange(len(labels)), labels]
    assert losses["ctm"].item() == pytest.approx(-ctm_true_class.log().mean().item(), rel=1e-5)
    blend = 0.1 * (cells @ texts.T / 0.05).softmax(-1) + 0.9 * match.softmax(-1)
    torch.testing.assert_close(task.scores(scores), blend, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(scores.match_prob, match, atol=1e-5, rtol=1e-5)


def test_losses_finite_and_decreasing_on_a_fixed_batch(task_and_batch):
    task, batch = task_and_batch
    task.eval()  # no dropout: the same batch gives the same loss before each step
    optimizer = torch.optim.Adam([p for p in task.parameters() if p.requires_grad], lr=1e-3)
    history = []
    for _ in range(5):
        losses = task.losses(task(batch), batch["labels"])
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([value.item() for value in losses.values()])
    history = np.array(history)  # [steps, (ctc, ctm)]
    assert np.isfinite(history).all()
    assert (np.diff(history, axis=0) < 0).all(), history
    assert task.model.temp.grad is None and all(p.grad is None for p in task.model.mgm_head.parameters())


def test_k_larger_than_the_smallest_class_is_refused(run_cli):
    with pytest.raises(LangCellInputError, match=r"fewer than k=2 cells: Ciliated \(1 cells\)"):
        run_cli("fit", "few_shot.yaml", "--data.k_shot", "2", *TINY_FIT, data=LUNG)


def test_classes_sharing_a_text_are_refused(repo_root, corpus_cache, task_and_batch):
    data = LangCellDataModule(str(repo_root / LUNG), cache_dir=str(corpus_cache), texts=False)
    with pytest.warns(UserWarning, match="fewer cells than"):
        data.setup("fit")
    task = FewShotLangCell(model="tiny")
    with pytest.raises(LangCellInputError, match="identical class texts.*'Naive AEC2'"):
        task.set_classes(data.classes, data.class_texts())


def test_no_labels_are_refused(run_cli):
    with pytest.raises(LangCellInputError, match="k_shot needs labels"):
        run_cli("fit", "few_shot.yaml", "--data.label_column", "null", *TINY_FIT)
    with pytest.raises(LangCellInputError, match="'bulk_label'"):
        run_cli("fit", "few_shot.yaml", "--data.label_column", "bulk_label", *TINY_FIT)
