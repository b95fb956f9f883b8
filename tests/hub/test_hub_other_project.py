"""The package used from another project: a throw-away folder with a script that imports only the
public API, run in a subprocess with that folder as working directory."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

import lightning_langcell

# The script's steps; each is a block of Python run in order in one process. The zero-shot step
# (an AnnData through the loaded model, from the zero-shot work) is to be appended here as
# ZERO_SHOT_STEP when that API lands; it can use `model`, `tokenizer`, `fixture` and `result`.
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
STEPS = [LOAD_OFFICIAL_STEP, SAVE_AND_RELOAD_STEP]


def _script() -> str:
    head = "import json, pathlib, sys\nimport numpy as np\nimport torch\n\n"
    head += "fixture = pathlib.Path(sys.argv[1])\nresult = {}\n"
    tail = "\nprint('RESULT ' + json.dumps(result))\n"
    return head + "".join(textwrap.dedent(step) for step in STEPS) + tail


def test_public_api_from_another_project(tmp_path, official_dir, repo_root):
    if not hasattr(lightning_langcell, "LangCellModel"):
        pytest.fail("lightning_langcell does not export LangCellModel yet: add the lazy export to "
                    "lightning_langcell/__init__.py (see the hub report).")
    project = tmp_path / "other_project"
    project.mkdir()
    (project / "use_langcell.py").write_text(_script())
    env = {**os.environ, "PYTHONPATH": str(repo_root), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "LANGCELL_HOME": str(tmp_path / "home")}
    done = subprocess.run([sys.executable, "use_langcell.py", str(official_dir)], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT ", 1)[1])
    assert result["official_cell_error"] < 1e-5 and result["official_text_error"] < 1e-5
    assert result["reloaded_cells_equal"] and result["retokenized_texts_equal"] and result["reloaded_texts_equal"]
    assert result["files"] == ["config.json", "gene_vocabulary", "model.safetensors", "text_tokenizer"]
    assert (project / "my_model" / "config.json").is_file() and not (repo_root / "my_model").exists()
