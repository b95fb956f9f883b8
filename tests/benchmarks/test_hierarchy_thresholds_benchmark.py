"""benchmarks/hierarchy_thresholds.py's grid on a hand-made hierarchy (hierarchical F1 by hand)."""

import numpy as np
import pytest

from benchmarks.hierarchy_thresholds import grid
from lightning_langcell.inference.hierarchy import ClassHierarchy
from lightning_langcell.text.ontology import Ontology, OntologyTerm


def test_grid_scores_each_threshold_pair():
    ontology = Ontology({"CL": [
        OntologyTerm("CL:0", "cell"), OntologyTerm("CL:1", "leukocyte", parents=("CL:0",)),
        OntologyTerm("CL:2", "T cell", parents=("CL:1",)), OntologyTerm("CL:3", "CD4 T", parents=("CL:2",)),
        OntologyTerm("CL:4", "CD8 T", parents=("CL:2",)), OntologyTerm("CL:5", "B cell", parents=("CL:1",))]})
    hierarchy = ClassHierarchy(["CL:3", "CL:4", "CL:5"], ontology)
    # both cells are CD4 T: one sure and right, one unsure and wrong (CD8 T 0.45; T cell sums to 0.75)
    probabilities = np.array([[0.5, 0.3, 0.2], [0.3, 0.45, 0.25]])
    rows = {(row["threshold"], row["ancestor_threshold"]): row for row in
            grid({"toy": (probabilities, ["CL:3", "CL:3"], hierarchy)})}
    # no back-off: sets {3,2,1}/{3,2,1} and {3,2,1}/{4,2,1}: P = R = 5/6
    assert rows[(0.0, 0.2)]["mean"]["hierarchical_f1"] == pytest.approx(5 / 6)
    # threshold 0.5, ancestor 0.7: the second cell backs off to T cell {2,1}: P = 5/5, R = 5/6, F1 = 10/11
    backed = rows[(0.5, 0.7)]
    assert backed["mean"]["hierarchical_f1"] == pytest.approx(10 / 11)
    assert backed["mean"]["backoff_fraction"] == 0.5
    assert backed["datasets"]["toy"]["correct_or_ancestor"] == 1.0
    # ancestor 0.8: T cell (0.75) is not sure, leukocyte (1.0) is: sets {1} vs {3,2,1}: P = 4/4, R = 4/6
    assert rows[(0.5, 0.8)]["mean"]["hierarchical_f1"] == pytest.approx(2 * 1 * (4 / 6) / (1 + 4 / 6))
