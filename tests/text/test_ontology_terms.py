"""Bundled ontology subset: term look-up, deprecations, label/synonym matching."""

import importlib.util

import pytest

from lightning_langcell.text.ontology import Ontology, OntologyTerm, normalize_label, normalize_term_id

B_CELL_DEFINITION = "A lymphocyte of B lineage that is capable of B cell mediated immunity."


@pytest.fixture(scope="module")
def ontology():
    return Ontology.bundled()


def test_term_lookup_values(ontology):
    term = ontology.term("CL:0000236")
    assert term == OntologyTerm("CL:0000236", "B cell", B_CELL_DEFINITION,
                                ("B lymphocyte", "B-cell", "B-lymphocyte"), ("CL:0000945",))
    assert ontology.term("CL_0000236") == term
    assert ontology.term(" CL:0000236 ") == term
    assert ontology.term("UBERON:0000178").definition == (
        "A fluid that is composed of blood plasma and erythrocytes.")
    assert ontology.term("UBERON:0002048 (organoid)").label == "lung"
    assert ontology.term("MONDO:0100096").label == "COVID-19"
    assert ontology.term("CL:9999999") is None
    assert ontology.term("HsapDv:0000087") is None
    assert ontology.term("not an id") is None


def test_deprecated_id_follows_replaced_by(ontology):
    # CL:0000003 "obsolete native cell" is replaced by CL:0000000 "cell"
    assert ontology.term("CL:0000003").id == "CL:0000000"
    assert ontology.term("CL:0000003").label == "cell"


def test_terms_without_definition_are_kept_for_cl(ontology):
    undefined = [t for t in ontology.terms("CL") if t.definition is None]
    assert len(ontology.terms("CL")) == 3324
    assert len(undefined) == 103


def test_bundled_is_cached():
    assert Ontology.bundled() is Ontology.bundled()


@pytest.mark.parametrize("text, expected", [
    ("B cell", "CL:0000236"),
    ("b CELL", "CL:0000236"),
    ("B cells", "CL:0000236"),          # plural of the last word
    ("B-cell", "CL:0000236"),           # hyphen == space
    ("  B   lymphocyte ", "CL:0000236"),  # synonym, whitespace runs
    ("NK cell", "CL:0000623"),          # synonym only
    ("T_cell", "CL:0000084"),           # underscore == space
    ("CD14 positive monocyte", "CL:0001054"),
    ("Macrophages", "CL:0000235"),
    ("lymphocytes", "CL:0000542"),
    ("endothelial", None),              # no "cell" appended: stays conservative
    ("B", None),
    ("CD4 T cells", None),
    ("", None),
])
def test_match_label_cell_ontology(ontology, text, expected):
    assert ontology.match_label(text) == expected


def test_match_label_is_scoped_by_ontology(ontology):
    assert ontology.match_label("blood") is None
    assert ontology.match_label("blood", "UBERON") == "UBERON:0000178"
    assert ontology.match_label("lung", None) == "UBERON:0002048"
    assert ontology.match_label("type 2 diabetes mellitus", "MONDO") == "MONDO:0005148"


def test_match_label_ambiguity_and_label_priority():
    terms = [OntologyTerm("CL:1", "alpha cell", "d1", ("shared name",)),
             OntologyTerm("CL:2", "beta cell", "d2", ("shared name", "alpha cell")),
             OntologyTerm("CL:3", "gamma cells", None, ())]
    ontology = Ontology({"CL": terms})
    assert ontology.match_label("alpha cell") == "CL:1"   # label beats CL:2's synonym
    assert ontology.match_label("shared name") is None   # two synonyms: ambiguous
    assert ontology.match_label("gamma cells") == "CL:3"  # exact before singular
    assert ontology.match_label("beta cells") == "CL:2"
    assert ontology.term("CL:3").definition is None
    # the real CL has one ambiguous synonym: MO.6C+II (CL:0002469 and CL:0002470)
    assert Ontology.bundled().match_label("MO.6C+II") is None


def test_ancestors_are_the_closure_of_the_bundled_parents(ontology):
    # CD8-positive, alpha-beta T cell: the export's ancestors with their distances
    ancestors = ontology.ancestors("CL:0000625")
    assert ancestors["CL:0000791"] == 1  # alpha-beta T cell
    assert ancestors["CL:0000084"] == 3  # T cell
    assert ancestors["CL:0000000"] == 8  # cell (root)
    assert len(ancestors) == 13
    assert ontology.ancestors("CL:0000000") == {} and ontology.ancestors("CL:9999999") == {}
    assert ontology.ancestors("UBERON:0002048") == {}  # bundled without hierarchy


def test_ancestors_of_a_hand_made_hierarchy():
    # root <- a <- c, root <- b <- c (diamond), c <- d
    terms = [OntologyTerm("CL:0", "root"), OntologyTerm("CL:1", "a", parents=("CL:0",)),
             OntologyTerm("CL:2", "b", parents=("CL:0",)), OntologyTerm("CL:3", "c", parents=("CL:1", "CL:2")),
             OntologyTerm("CL:4", "d", parents=("CL:3",))]
    ontology = Ontology({"CL": terms})
    assert ontology.ancestors("CL:4") == {"CL:3": 1, "CL:1": 2, "CL:2": 2, "CL:0": 3}
    assert ontology.ancestors("CL:1") == {"CL:0": 1}


def test_normalisers():
    assert normalize_term_id("cl_0000236") == "CL:0000236"
    assert normalize_term_id("unknown") is None
    assert normalize_term_id(float("nan")) is None
    assert normalize_label(" CD14-positive\tMonocyte_") == "cd14 positive monocyte"


def test_build_script_subset_policy(repo_root):
    spec = importlib.util.spec_from_file_location(
        "build_ontology_subset", repo_root / "scripts" / "build_ontology_subset.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    raw = {
        "CL:2": {"label": " b ", "description": "def b", "synonyms": ["z", "y"], "deprecated": False},
        "CL:1": {"label": "a", "deprecated": False},
        "CL:3": {"label": "old", "description": "x", "deprecated": True, "replaced_by": "CL:2"},
        "CL:4": {"label": "old2", "deprecated": True, "replaced_by": "CLO:9"},
    }
    assert script.subset(raw, keep_undefined=True, keep_synonyms=True) == {
        "id": ["CL:1", "CL:2"], "label": ["a", "b"], "definition": [None, "def b"],
        "synonyms": [[], ["y", "z"]], "replaced_by": {"CL:3": "CL:2"}}
    raw["CL:2"]["ancestors"] = {"CL:1": 1, "CL:0": 2, "CL:9": 1}  # CL:9 not kept
    assert script.subset(raw, keep_undefined=True, keep_synonyms=True, keep_parents=True)["parents"] == [[], ["CL:1"]]
    assert script.subset(raw, keep_undefined=False, keep_synonyms=False) == {
        "id": ["CL:2"], "label": ["b"], "definition": ["def b"], "synonyms": [[]],
        "replaced_by": {"CL:3": "CL:2"}}


def test_bundled_resources_fit_budget(repo_root):
    resources = repo_root / "lightning_langcell" / "text" / "resources"
    total = sum(path.stat().st_size for path in resources.rglob("*") if path.is_file())
    assert total < 2.3e6
    assert (resources / "SOURCE.md").is_file()
    assert (resources / "LICENSE-CC-BY-4.0.txt").is_file() and (resources / "LICENSE-CC-BY-3.0.txt").is_file()
