"""Memory stays bounded under load (slow: ~1 minute, writes ~0.6 GB to a temporary folder).

1. Tokenizing a 60,000 cells × 5,000 genes .h5ad (37.5M stored counts: 286 MiB as in-memory CSR,
   1.1 GiB dense) succeeds in a process whose address space is capped at 250 MiB above what its
   imports use (``RLIMIT_AS``), while reading the same file into memory (``anndata.read_h5ad``)
   fails under the same cap. A corpus that cannot be memory-mapped under a cap says so (not
   "damaged").
2. ``LangCellDataModule`` over a 1,000,000-cell corpus sets up and serves 500 batches with flat
   memory (anonymous RSS growth while serving < 16 MiB).

Each job runs in a child process (``reliability_memory_harness.py``) and reports its figures.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and RLIMIT_AS")]

HARNESS = Path(__file__).with_name("reliability_memory_harness.py")
ALLOWANCE_MIB = 250  # above the chunked tokenizer's need (~195 MiB of address space), below the CSR's 286 MiB
CELLS, GENES, GENES_PER_CELL = 60_000, 5_000, 625


def job(*args) -> dict:
    env = dict(os.environ, PYTHONPATH=str(HARNESS.parents[2]), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               MKL_NUM_THREADS="1")
    done = subprocess.run([sys.executable, str(HARNESS), *map(str, args)], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(args[0], json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in figures.items()}))
    return figures


@pytest.fixture(scope="module")
def big_h5ad(tmp_path_factory):
    path = tmp_path_factory.mktemp("memory") / "big.h5ad"
    figures = job("make-h5ad", path, CELLS, GENES, GENES_PER_CELL)
    assert figures["csr_mib"] > ALLOWANCE_MIB and figures["dense_mib"] > 4 * ALLOWANCE_MIB
    return path, figures["csr_mib"]


def test_tokenizing_a_large_file_fits_a_small_address_space(big_h5ad, tmp_path):
    big_h5ad, csr_mib = big_h5ad
    figures = job("tokenize", big_h5ad, tmp_path / "corpus", ALLOWANCE_MIB)
    assert figures["cells"] == CELLS and figures["tokens"] > 30_000_000
    assert figures["peak_rss_mib"] - figures["rss_before_mib"] < 0.6 * csr_mib  # ~130 MiB measured

    in_memory = job("load", big_h5ad, ALLOWANCE_MIB)
    assert in_memory["loaded"] is False  # the same cap is too small for the whole matrix

    opened = job("open", tmp_path / "corpus", 20)  # tokens.npy (~72 MiB) cannot be mapped in 20 MiB
    assert opened["opened"] is False
    assert "out of virtual memory" in opened["error"] and "does not need to be re-created" in opened["error"]
    assert "damaged" not in opened["error"]


def test_data_module_over_a_million_cells_serves_with_flat_memory(tmp_path):
    made = job("make-corpus", tmp_path / "corpus", 1_000_000)
    assert made["cells"] == 1_000_000
    figures = job("serve", tmp_path / "corpus", tmp_path / "cache", 500)
    assert figures["train_cells"] > 790_000 and figures["cells_served"] == 500 * 64
    assert figures["anon_after_mib"] - figures["anon_before_mib"] < 16
    assert figures["rss_after_mib"] - figures["rss_before_mib"] < 64  # includes memory-mapped pages read
