"""The AdamW schedule keys are declared once (AdamWSchedule) and keep each task's own defaults."""

import pytest
from jsonargparse import ArgumentParser

from lightning_langcell.tasks.cell_classifier import CellTypeClassifier
from lightning_langcell.tasks.few_shot import FewShotLangCell
from lightning_langcell.tasks.pretrain import LangCellPretraining

DEFAULTS = {  # (learning_rate, weight_decay, warmup_steps, min_lr_ratio, betas) as the tasks had them
    CellTypeClassifier: (5e-5, 0.001, 500, 0.0, (0.9, 0.999)),
    FewShotLangCell: (1e-5, 0.0, 0, 1.0, (0.9, 0.999)),
    LangCellPretraining: (1e-4, 0.01, 100, 0.1, (0.9, 0.98)),
}
KEYS = ("learning_rate", "weight_decay", "warmup_steps", "min_lr_ratio", "betas")


@pytest.mark.parametrize("task_class", list(DEFAULTS))
def test_each_task_keeps_its_schedule_defaults_and_records_them(task_class):
    task = task_class(model="tiny", warmup_steps=7)
    expected = dict(zip(KEYS, DEFAULTS[task_class]), warmup_steps=7)
    assert {key: getattr(task, key) for key in KEYS} == expected
    assert {key: task.hparams[key] for key in KEYS} == expected  # what a checkpoint reloads with
    assert task.hparams["model"] == "tiny"


def test_an_unknown_schedule_key_is_refused():
    with pytest.raises(TypeError, match="learnin_rate"):
        CellTypeClassifier(model="tiny", learnin_rate=1e-3)


@pytest.mark.parametrize("task_class", list(DEFAULTS))
def test_the_cli_sees_typed_schedule_keys(task_class):
    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(task_class, "model")
    config = parser.parse_args(["--model.learning_rate", "0.5", "--model.betas", "[0.8, 0.9]"])
    assert config.model.learning_rate == 0.5 and tuple(config.model.betas) == (0.8, 0.9)
    with pytest.raises(Exception):
        parser.parse_args(["--model.warmup_steps", "many"])
