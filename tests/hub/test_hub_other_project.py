"""The package used from another project: a throw-away folder with a script that imports only the
public API, run in a subprocess with that folder as working directory."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import lightning_langcell

# The script's steps; each is a block of Python run in order in one process.
LOAD_OFFICIAL_STEP = """
from lightning_langcell import LangCellModel
from lightning_langcell.hub.loading import load_text_tokenizer_for

inputs = {name: torch.from_numpy(np.load(fixture / "inputs" / f"{name}.npy"))
          for name in ("cell_input_ids", "cell_attention_mask", "text_input_ids", "text_attention_mask")}
model = LangCellModel.from_pretrained(fixture)  # the official layout
with torch.no_grad():
    cells = model.encode_cells(inputs["cell_input_ids"], inputs["cell_attention_mask"])[1]
    texts = model.encode_texts(inputs["text_input_ids"], inputs["text_attention_mask"])[1]
for name, value in (("cell", cells), ("text", texts)):
    expected = torch.from_numpy(np.load(fixture / "expected" / f"{name}_embedding.npy"))
    result[f"official_{name}_error"] = float((value - expected).abs().max())
"""
SAVE_AND_RELOAD_STEP = """
model.save_pretrained("my_model", text_tokenizer=str(fixture / "tokenizer"))  # relative to this project
again = LangCellModel.from_pretrained("my_model")
tokenizer = load_text_tokenizer_for("my_model")
encoded = tokenizer(json.loads((fixture / "inputs/class_texts.json").read_text()), padding=True,
                    return_token_type_ids=False, return_tensors="pt")
with torch.no_grad():
    cells_again = again.encode_cells(inputs["cell_input_ids"], inputs["cell_attention_mask"])[1]
    texts_again = again.encode_texts(encoded["input_ids"], encoded["attention_mask"])[1]
result["reloaded_cells_equal"] = bool(torch.equal(cells_again, cells))
result["retokenized_texts_equal"] = bool(torch.equal(encoded["input_ids"], inputs["text_input_ids"]))
result["reloaded_texts_equal"] = bool(torch.equal(texts_again, texts))
result["files"] = sorted(p.name for p in pathlib.Path("my_model").iterdir())
"""
ZERO_SHOT_STEP = """
import anndata
import lightning_langcell as llc

cells = anndata.read_h5ad(sys.argv[2])
shipped = llc.annotate(cells, "langcell-tiny-bundled", label_column="cell_type", alpha=1.0, max_length=128)
result["shipped_metrics"] = shipped.uns["langcell"]["metrics"]
result["shipped_probability_sums"] = shipped.obsm["langcell_probabilities"].sum(1).round(5).tolist()
official = llc.annotate(cells, model, classes=["CL:0000127", "CL:0000128"], label_column=None,
                        text_tokenizer=str(fixture / "tokenizer"), max_length=128)
result["official_classes"] = list(official.uns["langcell_classes"])
result["official_predictions"] = sorted(set(official.obs["langcell_prediction"].astype(str)))
"""
LIGHTNING_CKPT_STEP = """
from lightning_langcell.tasks import LangCellPretraining

task = LangCellPretraining.load_from_checkpoint(sys.argv[3], weights_only=True)
from_ckpt = llc.load_model(sys.argv[3])
result["ckpt_weights_equal"] = all(torch.equal(a, b) for a, b in zip(task.model.state_dict().values(),
                                                                      from_ckpt.state_dict().values()))
"""
STEPS = [LOAD_OFFICIAL_STEP, SAVE_AND_RELOAD_STEP, ZERO_SHOT_STEP, LIGHTNING_CKPT_STEP]


@pytest.fixture(scope="module")
def small_cells(tmp_path_factory, repo_root):
    """40 real mouse brain cells of two types (astrocytes and oligodendrocytes)."""
    import anndata
    import numpy as np

    adata = anndata.read_h5ad(repo_root / "data/cells/zeisel_mouse_brain.h5ad")
    keep = np.flatnonzero(adata.obs["cell_type"].isin(["Astrocyte1", "Oligo_Mature"]).to_numpy())[::5]
    path = tmp_path_factory.mktemp("cells") / "small.h5ad"
    adata[keep].copy().write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def lightning_ckpt(tmp_path_factory):
    """A .ckpt of a 2-step pre-training fit on random cells."""
    lightning = pytest.importorskip("lightning.pytorch")
    import numpy as np
    from torch.utils.data import DataLoader

    from lightning_langcell.data.collate import CellBatchCollator
    from lightning_langcell.tasks import LangCellPretraining

    rng = np.random.default_rng(0)
    items = [{"index": i, "epoch": 0, "input_ids": rng.integers(2, 25426, size=12).astype(np.int32),
              "text_tokens": np.array([2, 10 + i % 3, 3]), "text_id": i % 3} for i in range(8)]
    loader = DataLoader(items, batch_size=4, collate_fn=CellBatchCollator(max_length=16, mgm_probability=0.15))
    trainer = lightning.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                                enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(LangCellPretraining(model="tiny", warmup_steps=1), loader)
    path = tmp_path_factory.mktemp("ckpt") / "run.ckpt"
    trainer.save_checkpoint(path)
    return path


def _script() -> str:
    head = "import json, pathlib, sys\nimport numpy as np\nimport torch\n\n"
    head += "fixture = pathlib.Path(sys.argv[1])\nresult = {}\n"
    tail = "\nprint('RESULT ' + json.dumps(result))\n"
    return head + "".join(textwrap.dedent(step) for step in STEPS) + tail


def test_public_api_from_another_project(tmp_path, official_dir, repo_root, small_cells, lightning_ckpt):
    if not hasattr(lightning_langcell, "LangCellModel"):
        pytest.fail("lightning_langcell does not export LangCellModel yet: add the lazy export to "
                    "lightning_langcell/__init__.py (see the hub report).")
    project = tmp_path / "other_project"
    project.mkdir()
    (project / "use_langcell.py").write_text(_script())
    env = {**os.environ, "PYTHONPATH": str(repo_root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "LANGCELL_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "use_langcell.py", str(official_dir), str(small_cells),
                           str(lightning_ckpt)], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["official_cell_error"] < 1e-5 and result["official_text_error"] < 1e-5
    assert result["reloaded_cells_equal"] and result["retokenized_texts_equal"] and result["reloaded_texts_equal"]
    assert result["files"] == ["config.json", "gene_vocabulary", "model.safetensors", "text_tokenizer"]
    assert (project / "my_model" / "config.json").is_file() and not (repo_root / "my_model").exists()
    # zero-shot with our shipped checkpoint and with the official-layout model
    assert result["shipped_probability_sums"] == [1.0] * 20
    assert result["shipped_metrics"]["n_evaluated"] == 20 and result["shipped_metrics"]["accuracy"] >= 0.8
    assert result["official_classes"] == ["CL:0000127", "CL:0000128"]
    assert set(result["official_predictions"]) <= {"CL:0000127", "CL:0000128"}
    assert result["ckpt_weights_equal"]
