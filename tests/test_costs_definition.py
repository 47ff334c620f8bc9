"""The cost names and the constraints a study may put on them (pure: no resources)."""

import math

import pytest

from st_hpo._definition._costs import COST_NAMES, parse_constraint, parse_constraints
from st_hpo.exceptions import StudyDefinitionError


def test_a_constraint_reads_its_comparison_and_says_how_far_it_is_broken():
    dim = parse_constraint("cost.embedding_dim", "<= 256")
    assert (dim.op, dim.bound) == ("<=", 256.0)
    assert dim.satisfied(256) and not dim.satisfied(384)
    assert dim.violation(128) <= 0 and dim.violation(384) == 128
    assert parse_constraint("sts-dev_spearman_cosine", "> 0.8").satisfied(0.81)
    assert not parse_constraint("cost.encode_ms", "< 1e3").satisfied(math.nan)


@pytest.mark.parametrize("name, text, says", [
    ("cost.encode_seconds", "<= 1", "unknown cost 'cost.encode_seconds'"),
    ("cost.embedding_dim", "256", "not a comparison"),
    ("cost.embedding_dim", "<= big", "not a comparison"),
    ("cost.embedding_dim", 256, "not a comparison"),
])
def test_an_unknown_cost_or_unreadable_constraint_is_refused_in_one_line(name, text, says):
    with pytest.raises(StudyDefinitionError) as error:
        parse_constraints({name: text})
    assert says in str(error.value) and "\n" not in str(error.value)


def test_every_measured_cost_is_named_in_the_cost_namespace():
    assert all(name.startswith("cost.") for name in COST_NAMES)
    assert parse_constraints(None) == ()
