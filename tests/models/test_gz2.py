"""The Galaxy Zoo 2 question tree and the hierarchical probability normalisation layer."""
from __future__ import annotations

import pytest
import torch

from sim2obs.errors import ConfigError, Sim2obsValueError
from sim2obs.models.gz2 import GZ2_QUESTIONS, HierarchicalProbabilityNorm, QuestionTree, gz2_tree


@pytest.fixture
def tree() -> QuestionTree:
    return gz2_tree()


def _scores(batch: int = 16) -> torch.Tensor:
    """Non-negative raw scores with some exact zeros (as after a ReLU) and one all-zero row."""
    scores = torch.relu(torch.randn(batch, 37))
    scores[0] = 0.0
    return scores


def _question_sums(tree: QuestionTree, probs: torch.Tensor) -> dict[str, torch.Tensor]:
    return {q.id: probs[:, q.start:q.stop].sum(-1) for q in tree.questions}


def _p(tree: QuestionTree, probs: torch.Tensor, answer: str) -> torch.Tensor:
    return probs[:, tree.answer_index(answer)]


def test_gz2_tree_has_the_table_layout(tree, load_fixture):
    assert len(tree) == 11 and tree.num_answers == 37
    assert tree.column_names(suffix=None) == load_fixture("gz2_columns.json")["columns"]
    assert tree.column_names()[24] == "t08_odd_feature_a38_dust_lane_weighted_fraction"
    assert "a35" not in tree.answer_ids


def test_questions_are_processed_parents_first(tree):
    position = {tree.questions[i].id: rank for rank, i in enumerate(tree.order)}
    owner = {a: q.id for q in tree.questions for a in q.answer_ids}
    for q in tree.questions:
        for parent in q.asked_after:
            assert position[owner[parent]] < position[q.id]


def test_norm_gives_valid_unconditional_probabilities(tree):
    probs = HierarchicalProbabilityNorm(tree)(_scores())
    assert probs.shape == (16, 37)
    assert bool(((probs >= 0) & (probs <= 1)).all())
    sums = _question_sums(tree, probs)
    one = torch.ones(16)
    assert torch.allclose(sums["t01"], one, atol=1e-6)
    for i, q in enumerate(tree.questions):
        asked = sum((_p(tree, probs, a) for a in q.asked_after), torch.zeros(16)) if q.asked_after else one
        assert torch.allclose(sums[q.id], asked, atol=1e-6), q.id
    # The asked probabilities listed in the GZ2 note.
    p = lambda a: _p(tree, probs, a)  # noqa: E731
    expected = {"t02": p("a02"), "t03": p("a05"), "t04": p("a05"), "t05": p("a05"), "t07": p("a01"),
                "t09": p("a04"), "t10": p("a08"), "t11": p("a08"), "t06": p("a01") + p("a02"),
                "t08": p("a14")}
    for qid, value in expected.items():
        assert torch.allclose(sums[qid], value, atol=1e-6), qid
    # t06 is reached by every smooth galaxy and every disk: 1 - p(star or artifact).
    assert torch.allclose(sums["t06"], 1 - p("a03"), atol=1e-6)


def test_norm_of_all_zero_scores_is_uniform_and_finite(tree):
    probs = HierarchicalProbabilityNorm(tree)(torch.zeros(2, 37))
    assert bool(torch.isfinite(probs).all())
    assert torch.allclose(probs[:, :3], torch.full((2, 3), 1 / 3), atol=1e-6)
    # t02 (edge-on): asked with p(a02) = 1/3, two answers -> 1/6 each.
    assert torch.allclose(probs[:, 3:5], torch.full((2, 2), 1 / 6), atol=1e-6)


def test_norm_matches_a_hand_computed_example():
    questions = [
        {"id": "q1", "answers": {"yes": "yes", "no": "no"}},
        {"id": "q2", "answers": {"red": "red", "blue": "blue", "green": "green"}, "asked_after": ["yes"]},
        {"id": "q3", "answers": {"big": "big", "small": "small"}, "asked_after": ["red", "no"]},
    ]
    assert QuestionTree(questions[:2]).questions[1].asked_after == ("yes",)
    single = [questions[0], {**questions[1], "asked_after": "yes"}]  # one parent given as a string
    assert QuestionTree(single).questions[1].asked_after == ("yes",)
    norm = HierarchicalProbabilityNorm(questions, eps=0.0)
    scores = torch.tensor([[3.0, 1.0, 2.0, 1.0, 1.0, 1.0, 3.0]])
    # q1: 0.75 / 0.25; q2 x 0.75: 0.375, 0.1875, 0.1875; q3 x (0.375 + 0.25): 0.15625, 0.46875
    expected = torch.tensor([[0.75, 0.25, 0.375, 0.1875, 0.1875, 0.15625, 0.46875]])
    assert torch.allclose(norm(scores), expected)


def test_gradients_flow_to_every_answer(tree):
    scores = (torch.rand(4, 37) + 0.1).requires_grad_(True)
    probs = HierarchicalProbabilityNorm(tree)(scores)
    (probs * torch.randn(4, 37)).sum().backward()
    assert bool(torch.isfinite(scores.grad).all())
    assert bool((scores.grad.abs().sum(0) > 0).all())


def test_conditional_round_trip(tree):
    conditional = torch.cat([torch.softmax(torch.randn(5, len(q.answer_ids)), -1) for q in tree.questions], -1)
    unconditional = tree.to_unconditional(conditional)
    assert torch.allclose(tree.to_conditional(unconditional), conditional, atol=1e-5)


def test_wrong_width_is_rejected(tree):
    with pytest.raises(Sim2obsValueError, match="one value per answer"):
        HierarchicalProbabilityNorm(tree)(torch.rand(2, 36))


@pytest.mark.parametrize("questions, message", [
    ([{"id": "a", "answers": ["x", "y"], "asked_after": ["z"]},
      {"id": "b", "answers": ["z", "w"], "asked_after": ["x"]}], "no root"),
    ([{"id": "a", "answers": ["x", "y"]}, {"id": "b", "answers": ["z", "w"], "asked_after": ["q"]}],
     "unknown parent answer"),
    ([{"id": "a", "answers": ["x", "y"]}, {"id": "b", "answers": ["x", "w"]}], "duplicate answer"),
    ([{"id": "r", "answers": ["s", "t"]}, {"id": "a", "answers": ["x", "y"], "asked_after": ["z"]},
      {"id": "b", "answers": ["z", "w"], "asked_after": ["x"]}], "cycle"),
    ([{"id": "a", "answers": ["x"]}], "at least two answers"),
])
def test_invalid_trees_are_config_errors(questions, message):
    with pytest.raises(ConfigError, match=message):
        QuestionTree(questions)


def test_tree_reads_from_yaml(tmp_path):
    import yaml

    path = tmp_path / "tree.yaml"
    path.write_text(yaml.safe_dump({"questions": GZ2_QUESTIONS}, sort_keys=False))
    loaded = QuestionTree.from_file(path)
    assert loaded.column_names() == gz2_tree().column_names()
    assert loaded.order == gz2_tree().order
