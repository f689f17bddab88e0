"""The Galaxy Zoo 2 decision tree (Willett et al. 2013, Table 2) and the unconditional probabilities of
its answers (Dobbels et al. 2019, §3.1; ``shared/notes/gz2_tree.md``), for numpy arrays and torch
tensors alike: the survey readers use it on vote tables, the networks' output layer
(:class:`sim2obs.models.gz2.HierarchicalProbabilityNorm`) on tensors.

Output layout: the answers of every question, questions in configuration order. For the GZ2 tree this is
the column order of the GZ2 tables (Willett et al. 2013; Hart et al. 2016): ``t01_..._a01`` ...
``t08_..._a24``, ``t08_..._a38`` (dust lane), ``t09_..._a25`` ... ``t11_..._a37`` (37 answers; there is no
a35). :meth:`QuestionTree.column_names` gives those column names.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from sim2obs.errors import ConfigError, Sim2obsValueError

__all__ = ["GZ2_QUESTIONS", "Question", "QuestionTree", "gz2_tree"]

#: A numpy array or a torch tensor (``(..., num_answers)``).
Array = Any


def _concat(parts: Sequence[Array], like: Array) -> Array:
    """Concatenate along the last axis, numpy or torch like ``like``."""
    if isinstance(like, np.ndarray):
        return np.concatenate(parts, axis=-1)
    import torch  # tensors only: the core never imports torch for numpy callers

    return torch.cat(list(parts), dim=-1)


#: The GZ2 tree (Willett et al. 2013, Table 2), in table column order. ``asked_after`` lists the answers
#: that lead to the question; when there are several (t06) they are mutually exclusive and the
#: probability that the question is asked is the sum of their unconditional probabilities.
GZ2_QUESTIONS: list[dict[str, Any]] = [
    {"id": "t01", "name": "smooth_or_features", "asked_after": [],
     "answers": {"a01": "smooth", "a02": "features_or_disk", "a03": "star_or_artifact"}},
    {"id": "t02", "name": "edgeon", "asked_after": ["a02"],
     "answers": {"a04": "yes", "a05": "no"}},
    {"id": "t03", "name": "bar", "asked_after": ["a05"],
     "answers": {"a06": "bar", "a07": "no_bar"}},
    {"id": "t04", "name": "spiral", "asked_after": ["a05"],
     "answers": {"a08": "spiral", "a09": "no_spiral"}},
    {"id": "t05", "name": "bulge_prominence", "asked_after": ["a05"],
     "answers": {"a10": "no_bulge", "a11": "just_noticeable", "a12": "obvious", "a13": "dominant"}},
    {"id": "t06", "name": "odd", "asked_after": ["a01", "a02"],
     "answers": {"a14": "yes", "a15": "no"}},
    {"id": "t07", "name": "rounded", "asked_after": ["a01"],
     "answers": {"a16": "completely_round", "a17": "in_between", "a18": "cigar_shaped"}},
    {"id": "t08", "name": "odd_feature", "asked_after": ["a14"],
     "answers": {"a19": "ring", "a20": "lens_or_arc", "a21": "disturbed", "a22": "irregular",
                 "a23": "other", "a24": "merger", "a38": "dust_lane"}},
    {"id": "t09", "name": "bulge_shape", "asked_after": ["a04"],
     "answers": {"a25": "rounded", "a26": "boxy", "a27": "no_bulge"}},
    {"id": "t10", "name": "arms_winding", "asked_after": ["a08"],
     "answers": {"a28": "tight", "a29": "medium", "a30": "loose"}},
    {"id": "t11", "name": "arms_number", "asked_after": ["a08"],
     "answers": {"a31": "1", "a32": "2", "a33": "3", "a34": "4", "a36": "more_than_4", "a37": "cant_tell"}},
]


@dataclass(frozen=True)
class Question:
    """One question: its answers occupy output columns ``start .. start + len(answer_ids) - 1``."""

    id: str
    name: str
    answer_ids: tuple[str, ...]
    answer_names: tuple[str, ...]
    asked_after: tuple[str, ...]
    start: int

    @property
    def stop(self) -> int:
        return self.start + len(self.answer_ids)


class QuestionTree:
    """A decision tree of questions whose answers lead to further questions.

    Args:
        questions: a list of ``{"id", "name", "answers": {answer_id: answer_name}, "asked_after":
            [answer ids]}``; ``asked_after`` (a list, or one answer id) is empty, absent or null for the
            root question(s). Several parent answers mean the question is asked after any of them; they
            must be mutually exclusive (answers of one question, or answers on different branches),
            because the probability that the question is asked is their sum.

    Raises :class:`ConfigError` on duplicate ids, unknown parent answers, a missing root or a cycle.
    Attributes: ``questions`` (config order), ``answer_ids`` (output order), ``num_answers``,
    ``order`` (question indices, parents before children).
    """

    def __init__(self, questions: Sequence[Mapping[str, Any]]):
        if not questions:
            raise ConfigError("questions", "the tree needs at least one question")
        parsed: list[Question] = []
        seen_questions: set[str] = set()
        answer_index: dict[str, int] = {}
        start = 0
        for i, spec in enumerate(questions):
            key = f"questions[{i}]"
            if "id" not in spec or "answers" not in spec:
                raise ConfigError(key, "a question needs 'id' and 'answers'", value=dict(spec))
            qid = str(spec["id"])
            if qid in seen_questions:
                raise ConfigError(f"{key}.id", "duplicate question id", value=qid)
            seen_questions.add(qid)
            answers = spec["answers"]
            if isinstance(answers, Mapping):
                ids, names = [str(a) for a in answers], [str(n) for n in answers.values()]
            else:
                ids = [str(a) for a in answers]
                names = list(ids)
            if len(ids) < 2:
                raise ConfigError(f"{key}.answers", "a question needs at least two answers", value=ids)
            for offset, aid in enumerate(ids):
                if aid in answer_index:
                    raise ConfigError(f"{key}.answers", "duplicate answer id", value=aid)
                answer_index[aid] = start + offset
            after = spec.get("asked_after") or ()
            parents = (str(after),) if isinstance(after, str) else tuple(str(a) for a in after)
            parsed.append(Question(qid, str(spec.get("name", qid)), tuple(ids), tuple(names), parents, start))
            start += len(ids)

        for i, q in enumerate(parsed):
            for parent in q.asked_after:
                if parent not in answer_index:
                    raise ConfigError(f"questions[{i}].asked_after", "unknown parent answer",
                                      value=parent, allowed=sorted(answer_index))
                if parent in q.answer_ids:
                    raise ConfigError(f"questions[{i}].asked_after",
                                      "a question cannot follow its own answer", value=parent)
        if all(q.asked_after for q in parsed):
            raise ConfigError("questions", "no root question (every question has asked_after)")

        self.questions = parsed
        self.answer_ids = [a for q in parsed for a in q.answer_ids]
        self.num_answers = len(self.answer_ids)
        self._answer_index = answer_index
        self._question_of_answer = {a: i for i, q in enumerate(parsed) for a in q.answer_ids}
        self.order = self._topological_order()
        # For every question: (parent question index, column within that question) of each parent answer.
        self._parents = [
            [(self._question_of_answer[a], answer_index[a] - parsed[self._question_of_answer[a]].start)
             for a in q.asked_after]
            for q in parsed
        ]

    def _topological_order(self) -> list[int]:
        done: list[int] = []
        placed: set[int] = set()
        remaining = list(range(len(self.questions)))
        while remaining:
            ready = [i for i in remaining
                     if all(self._question_of_answer[a] in placed for a in self.questions[i].asked_after)]
            if not ready:
                unresolved = [self.questions[i].id for i in remaining]
                raise ConfigError("questions", "the questions form a cycle (these are on or after it)",
                                  value=unresolved)
            for i in ready:
                done.append(i)
                placed.add(i)
            remaining = [i for i in remaining if i not in placed]
        return done

    @classmethod
    def from_file(cls, path: str | Path) -> "QuestionTree":
        """Read ``questions`` (a list as above, or a mapping with key ``questions``) from YAML or JSON."""
        import yaml

        data = yaml.safe_load(Path(path).read_text())
        if isinstance(data, Mapping):
            data = data.get("questions")
        if not isinstance(data, list):
            raise ConfigError("questions", f"{path} holds no list of questions")
        return cls(data)

    def answer_index(self, answer_id: str) -> int:
        """Output column of ``answer_id``."""
        try:
            return self._answer_index[answer_id]
        except KeyError:
            raise Sim2obsValueError("unknown answer", value=answer_id, allowed=self.answer_ids) from None

    def column_names(self, suffix: str | None = "weighted_fraction") -> list[str]:
        """GZ2 table column names in output order: ``tNN_<question>_aMM_<answer>[_<suffix>]``."""
        end = f"_{suffix}" if suffix else ""
        return [f"{q.id}_{q.name}_{aid}_{name}{end}"
                for q in self.questions for aid, name in zip(q.answer_ids, q.answer_names)]

    def _check_width(self, x: Array) -> None:
        if x.shape[-1] != self.num_answers:
            raise Sim2obsValueError("last dimension must hold one value per answer",
                                    value=tuple(x.shape), allowed=self.num_answers)

    def asked_probability(self, unconditional: Array, question: int) -> Array:
        """Probability ``(..., 1)`` that question number ``question`` is asked, from unconditional answers."""
        return self._asked(lambda j: unconditional[..., self.questions[j].start:self.questions[j].stop],
                           question, unconditional)

    def _asked(self, part_of, question: int, like: Array) -> Array:
        parents = self._parents[question]
        if not parents:
            shape = tuple(like.shape[:-1]) + (1,)
            return np.ones(shape, like.dtype) if isinstance(like, np.ndarray) else like.new_ones(shape)
        total = None
        for j, column in parents:
            value = part_of(j)[..., column:column + 1]
            total = value if total is None else total + value
        return total

    def to_unconditional(self, conditional: Array) -> Array:
        """Per-question fractions ``(..., num_answers)`` -> unconditional probabilities (same shape).

        Each question's fractions are multiplied by the probability that the question is asked (the sum
        of its parent answers' unconditional probabilities), parents first. Differentiable.
        """
        self._check_width(conditional)
        parts: list[Array] = [conditional] * len(self.questions)  # placeholders, all overwritten
        for i in self.order:
            q = self.questions[i]
            parts[i] = conditional[..., q.start:q.stop] * self._asked(lambda j: parts[j], i, conditional)
        return _concat(parts, conditional)

    def to_conditional(self, unconditional: Array, eps: float = 1e-12) -> Array:
        """Inverse of :meth:`to_unconditional`: divide each question by the probability it is asked."""
        self._check_width(unconditional)
        pieces = []
        for i, q in enumerate(self.questions):
            asked = self.asked_probability(unconditional, i)
            asked = np.maximum(asked, eps) if isinstance(asked, np.ndarray) else asked.clamp_min(eps)
            pieces.append(unconditional[..., q.start:q.stop] / asked)
        return _concat(pieces, unconditional)

    def __len__(self) -> int:
        return len(self.questions)

    def __repr__(self) -> str:
        return f"QuestionTree({len(self.questions)} questions, {self.num_answers} answers)"


def gz2_tree() -> QuestionTree:
    """The Galaxy Zoo 2 tree: 11 questions, 37 answers (:data:`GZ2_QUESTIONS`)."""
    return QuestionTree(GZ2_QUESTIONS)

