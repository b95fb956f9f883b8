"""lightning_langcell: LangCell language-cell pre-training as a PyTorch Lightning model zoo."""

__version__ = "0.1.0"
