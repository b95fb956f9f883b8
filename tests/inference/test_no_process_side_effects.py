"""No library call changes process-wide state: the C allocator (glibc ``mallopt`` through ctypes),
a global torch function mode, or private torch ops. (Allocator tuning is the user's, at process
level: see the README's speed section.)"""

import re
from pathlib import Path

import torch

import lightning_langcell
from lightning_langcell.inference.zero_shot import ZeroShotScorer

PACKAGE = Path(lightning_langcell.__file__).parent
FORBIDDEN = {
    "ctypes (C library calls such as mallopt)": re.compile(r"^\s*(import ctypes|from ctypes)", re.MULTILINE),
    "mallopt": re.compile(r"mallopt"),
    "a torch function mode": re.compile(r"TorchFunctionMode|_push_mode|push_torch_function_mode"),
    "private torch ops": re.compile(r"torch\.ops\.(mkldnn|aten)\b|torch\._C\._nn"),
}


def test_no_module_reaches_for_process_wide_state():
    found = [f"{path.relative_to(PACKAGE)}: {what}" for path in sorted(PACKAGE.rglob("*.py"))
             for what, pattern in FORBIDDEN.items() if pattern.search(path.read_text(encoding="utf-8"))]
    assert found == []


def test_scoring_runs_under_no_function_mode(official):
    """While the scorer runs the text encoder, no torch function mode is on the stack."""
    model, inputs, expected, classes = official
    depths = []
    hook = model.text_bert.register_forward_pre_hook(
        lambda module, args: depths.append(torch._C._len_torch_function_stack()))
    try:
        out = ZeroShotScorer(model, classes)(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    finally:
        hook.remove()
    assert depths and set(depths) == {0}
    torch.testing.assert_close(out.final_probs, expected["final_probs"], atol=1e-5, rtol=1e-5)
