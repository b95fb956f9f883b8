"""LightningModules: pre-training and the tasks that use a LangCell model."""

from lightning_langcell.tasks.pretrain import LangCellPretraining

__all__ = ["LangCellPretraining"]
