"""The hierarchical probability normalisation of Dobbels et al. (2019) as a network output layer, on the
Galaxy Zoo 2 decision tree of :mod:`sim2obs.gz2_tree` (re-exported here)."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from sim2obs.gz2_tree import GZ2_QUESTIONS, Question, QuestionTree, gz2_tree

__all__ = ["GZ2_QUESTIONS", "Question", "QuestionTree", "gz2_tree", "HierarchicalProbabilityNorm"]


class HierarchicalProbabilityNorm(nn.Module):
    """Raw non-negative scores ``(B, num_answers)`` -> valid unconditional answer probabilities.

    For each question (parents first) the scores are normalised to sum to one, then multiplied by the
    unconditional probability that the question is asked (Dobbels et al. 2019, §3.1). Feed it
    non-negative scores (a ReLU output layer, as the paper does). A question whose scores are all zero
    gets equal answer probabilities: scores are shifted by ``eps`` before normalising.
    Differentiable; the root answers sum to one and every other question sums to its asked probability.

    Args:
        tree: the question tree (default: the GZ2 tree).
        eps: the small shift that guards against all-zero questions.
    """

    def __init__(self, tree: QuestionTree | Sequence[Mapping[str, Any]] | None = None, eps: float = 1e-6):
        super().__init__()
        if tree is None:
            tree = gz2_tree()
        elif not isinstance(tree, QuestionTree):
            tree = QuestionTree(tree)
        self.tree = tree
        self.eps = float(eps)

    def forward(self, scores: Tensor) -> Tensor:
        """``(B, num_answers)`` non-negative -> ``(B, num_answers)`` unconditional probabilities."""
        self.tree._check_width(scores)
        shifted = scores + self.eps
        conditional = torch.cat(
            [shifted[..., q.start:q.stop] / shifted[..., q.start:q.stop].sum(-1, keepdim=True)
             for q in self.tree.questions], dim=-1)
        return self.tree.to_unconditional(conditional)

    def extra_repr(self) -> str:
        return f"{self.tree!r}, eps={self.eps}"
