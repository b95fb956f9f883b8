"""LightningModules: pre-training and the tasks that use a LangCell model."""

from lightning_langcell.tasks.cell_classifier import CellTypeClassifier
from lightning_langcell.tasks.classify import CellClassificationTask
from lightning_langcell.tasks.few_shot import FewShotLangCell
from lightning_langcell.tasks.pretrain import LangCellPretraining

__all__ = ["CellClassificationTask", "CellTypeClassifier", "FewShotLangCell", "LangCellPretraining"]
