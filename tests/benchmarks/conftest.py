"""One quick quality-suite run (garnett_pbmc_facs, 300 cells) shared by the benchmark tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory, repo_root):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    from benchmarks.run import main

    out = tmp_path_factory.mktemp("bench")
    main(["--suite", "quality", "--quick", "--datasets", "garnett_pbmc_facs", "--results-dir", str(out / "results"),
          "--leaderboard", str(out / "LEADERBOARD.md"), "--plots-dir", str(out / "plots")])
    return out
