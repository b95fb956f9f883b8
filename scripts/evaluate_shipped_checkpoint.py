"""Regenerate the shipped checkpoint's model card (README.md + metrics.json) from the leaderboard's results.

    python scripts/evaluate_shipped_checkpoint.py              # from benchmarks/results/quality.json
    python scripts/evaluate_shipped_checkpoint.py --evaluate   # rerun the quality suite first (~17 min)

The card's numbers are the quality suite's zero-shot rows (``benchmarks.quality``: each dataset's
fixed test split, every label of the dataset as a class), split into datasets never seen in
pre-training (cells and labels) and the pre-training datasets' held-out test cells; the card's
text is the template in ``benchmarks/shipped_checkpoint.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's benchmarks package importable
    sys.path.insert(0, str(REPO))

from benchmarks.shipped_checkpoint import CHECKPOINT, card_ready, write_card  # noqa: E402


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks/results/quality.json",
                        help="quality results to take the numbers from")
    parser.add_argument("--card-dir", type=Path, default=CHECKPOINT, help="checkpoint folder to write the card into")
    parser.add_argument("--evaluate", action="store_true",
                        help="first rerun `python -m benchmarks.run --suite quality` (writes --results and the card)")
    args = parser.parse_args(argv)
    if args.evaluate:
        from benchmarks.run import main as run_benchmarks

        run_benchmarks(["--suite", "quality", "--results-dir", str(args.results.parent), "--card-dir",
                        str(args.card_dir)])
    if not args.results.is_file():
        raise SystemExit(f"{args.results} does not exist: run `python -m benchmarks.run --suite quality` first "
                         "(or pass --evaluate).")
    quality = json.loads(args.results.read_text())
    if not card_ready(quality):
        raise SystemExit(f"{args.results} is a quick or partial quality run: the card needs a full run over every "
                         "training dataset and the never-seen sets (`python -m benchmarks.run --suite quality`).")
    written = write_card(quality, args.card_dir)
    print("wrote", ", ".join(str(path) for path in written))
    return written


if __name__ == "__main__":
    main()
