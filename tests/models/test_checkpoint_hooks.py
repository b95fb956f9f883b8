"""``LangCellModel``'s checkpoint methods come from hub through hooks: models never imports hub."""

import subprocess
import sys

import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models import checkpoint_io


def test_models_alone_give_a_clear_error_and_the_public_import_installs_the_hooks(repo_root):
    script = (
        "import sys\n"
        "from lightning_langcell.errors import LangCellInputError\n"
        "from lightning_langcell.models import LangCellModel\n"
        "assert not any(name.startswith('lightning_langcell.hub') for name in sys.modules)\n"
        "try:\n"
        "    LangCellModel.from_pretrained('anything')\n"
        "except LangCellInputError as error:\n"
        "    print('ERROR', error.problem, '|', error.fix)\n"
        "import lightning_langcell\n"
        "assert lightning_langcell.LangCellModel is LangCellModel\n"
        "from lightning_langcell.hub import load_model\n"
        "from lightning_langcell.models.checkpoint_io import checkpoint_hook\n"
        "print('HOOKED', checkpoint_hook('from_pretrained') is load_model)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=repo_root, capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(repo_root), "HF_HUB_OFFLINE": "1", "PATH": ""})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ERROR LangCellModel.from_pretrained needs the checkpoint code of lightning_langcell.hub" in done.stdout
    assert "from lightning_langcell import LangCellModel" in done.stdout
    assert "HOOKED True" in done.stdout


def test_hooks_are_filled_by_hub_and_unknown_hooks_are_refused():
    from lightning_langcell.hub import export_official, load_model, save_pretrained

    assert checkpoint_io.checkpoint_hook("from_pretrained") is load_model
    assert checkpoint_io.checkpoint_hook("save_pretrained") is save_pretrained
    assert checkpoint_io.checkpoint_hook("export_official") is export_official
    with pytest.raises(LangCellInputError, match="Unknown checkpoint hooks"):
        checkpoint_io.register_checkpoint_hooks(load=load_model)
