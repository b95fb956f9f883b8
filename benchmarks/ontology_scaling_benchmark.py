"""Zero-shot at ontology scale (speed suite entry): the whole-ontology class-scaling table of
:mod:`benchmarks.zero_shot_benchmark` (``--ontology-only``) run on its own.

    python -m benchmarks.ontology_scaling_benchmark --ontology-scaling 10,100,1000,all --genes 2047 --threads 1 \
        --official-max-classes 10 --text-sample 64

Arguments are :mod:`benchmarks.zero_shot_benchmark`'s. Official sizes (12-layer encoders, 2,048
tokens), random weights, the official per-class algorithm timed at 1 class and each count up to
``--official-max-classes`` and fitted linearly in the class count beyond (rows marked
``official_measured = False``). Returns the table's rows and the whole table under
``ontology_scaling`` (rendered by :func:`benchmarks.leaderboard.ontology_speed_lines`).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.zero_shot_benchmark import main as zero_shot_main

    table = zero_shot_main(["--ontology-only", "--real-data", "", *(argv or [])])["ontology_scaling"]
    return {"rows": table["rows"], "ontology_scaling": table}


if __name__ == "__main__":
    main()
