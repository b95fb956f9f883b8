"""A pre-training run interrupted after step k and resumed from ``last.ckpt`` ends exactly where an
uninterrupted run with the same seed ends: same per-step losses, same weights.

Run: tiny LangCellPretraining, 10% of the bundled mouse lung cells, max_length 32, batch 8,
2 epochs × 8 steps, all four losses (MGM masks, hard negatives and dropout all in play).
Kill points: a random step of epoch 1, the epoch boundary, a random step of epoch 2 (in-process:
an exception right after the checkpoint of step k; slow variant: SIGKILL of a child process).
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lightning.pytorch")

from reliability_resume_harness import max_weight_difference, run  # noqa: E402

STEPS = 16  # 2 epochs × 8 batches of 8 cells
TOLERANCE = 1e-6
_rng = random.Random(20240611)
KILL_POINTS = [_rng.randint(1, 7), 8, _rng.randint(9, 15)]
HARNESS = Path(__file__).with_name("reliability_resume_harness.py")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("corpora")


@pytest.fixture(scope="module")
def unbroken(cache_dir, tmp_path_factory):
    result = run(tmp_path_factory.mktemp("unbroken"), cache_dir)
    assert result["global_step"] == STEPS and sorted(result["losses"]) == list(range(1, STEPS + 1))
    return result


def _assert_same_continuation(unbroken: dict, losses: dict, weights: dict, kill: int) -> float:
    assert sorted(int(step) for step in losses) == list(range(kill + 1, STEPS + 1))
    for step, loss in losses.items():
        assert loss == pytest.approx(unbroken["losses"][int(step)], abs=TOLERANCE), f"step {step}"
    difference = max_weight_difference(unbroken["weights"], weights)
    print(f"kill after step {kill}: max |weight difference| = {difference:.3g}")
    assert difference <= TOLERANCE
    return difference


@pytest.mark.parametrize("kill", KILL_POINTS)
def test_interrupted_then_resumed_equals_unbroken(unbroken, cache_dir, tmp_path, kill):
    first = run(tmp_path, cache_dir, stop_at=kill)
    assert first["global_step"] == kill
    assert first["losses"] == {step: unbroken["losses"][step] for step in range(1, kill + 1)}
    resumed = run(tmp_path, cache_dir, resume=True)
    assert resumed["global_step"] == STEPS
    _assert_same_continuation(unbroken, resumed["losses"], resumed["weights"], kill)


def _harness(args, **popen) -> subprocess.Popen:
    """Start ``reliability_resume_harness.py ARGS`` in a child process."""
    paths = [str(HARNESS.parents[2]), str(HARNESS.parent)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(paths))
    return subprocess.Popen([sys.executable, str(HARNESS), *map(str, args)], env=env, **popen)


@pytest.mark.slow
@pytest.mark.skipif(os.name == "nt", reason="SIGKILL is POSIX")
def test_sigkilled_then_resumed_equals_unbroken(unbroken, cache_dir, tmp_path):
    kill = random.Random(7).randint(2, STEPS - 2)
    child = _harness([tmp_path, cache_dir, "--block-at", kill], stdout=subprocess.PIPE, text=True)
    try:
        for line in child.stdout:
            if line.strip() == f"checkpointed {kill}":
                break
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    assert not (tmp_path / "weights.safetensors").exists()  # it never finished
    killed_losses = json.loads((tmp_path / "losses.json").read_text())
    assert {int(s): v for s, v in killed_losses.items()} == {s: unbroken["losses"][s] for s in range(1, kill + 1)}

    resumed = _harness([tmp_path, cache_dir, "--resume"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert resumed.wait(timeout=300) == 0
    from safetensors.torch import load_file

    losses = json.loads((tmp_path / "losses_resumed.json").read_text())
    weights = load_file(str(tmp_path / "weights.safetensors"))
    _assert_same_continuation(unbroken, losses, {k: weights[k] for k in unbroken["weights"]}, kill)
    assert all(torch.equal(weights[k], unbroken["weights"][k]) for k in unbroken["weights"])
