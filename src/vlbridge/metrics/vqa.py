"""VQA accuracy exactly as the official VQA evaluation computes it.

Per question, with the 10 human answers a_1..a_10 and the prediction p (both normalised as below):

    acc = mean over i of  min(1, #{j != i : a_j == p} / 3)

Two official versions are in use and disagree on what gets normalised (see :mod:`.vqa_normalize`):

- ``"current"`` (default): the official repository today (GT-Vision-Lab/VQA, ``vqaEval.py`` at commit
  a013f00). Human answers and the prediction get white space cleaned; then, only if the 10 human
  answers are not all identical, *both* get the full normalisation (punctuation, number words,
  articles, contractions). When all 10 are identical nothing is normalised: "Yes" scores 0 against
  ten "yes".
- ``"2017"``: the 2017 code that LAVIS and many papers copied (``vqaEval.py`` at commit c4e6a0e;
  LAVIS ``lavis/common/vqa_tools/vqa_eval.py``). The prediction always gets the full normalisation;
  human answers get punctuation processing only, and only when they are not all identical (so a
  human "The cat" never matches any prediction).

Rounding, as the official ``setAccuracy``/``setEvalQA``: overall, per answer type and per question type
are ``round(100 * mean, 2)`` of the *unrounded* per-question accuracies; per-question values are
``round(100 * acc, 2)``. Python 3 ``round`` is used (ties to even; the current official code is
Python 2, whose ``round`` breaks exact binary ties away from zero: a one-digit difference in the last
place, only on exact ties). Unrounded values are returned alongside.

Leave-one-out: the official code drops "the" current answer by comparing answer dicts, which in
VQAv2 carry distinct ``answer_id`` s, so exactly one answer is left out; we leave out by position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vlbridge.errors import ConfigError, DataError
from vlbridge.metrics.vqa_normalize import clean_whitespace, process_digit_article, process_punctuation

VQA_EVAL_VERSIONS: dict[str, str] = {
    "current": "official VQA evaluation, current code (GT-Vision-Lab/VQA vqaEval.py @ a013f00): "
    "human answers and prediction fully normalised only when the 10 human answers differ",
    "2017": "official VQA evaluation, 2017 code as copied by LAVIS (GT-Vision-Lab/VQA vqaEval.py "
    "@ c4e6a0e): prediction always fully normalised, human answers get punctuation processing only",
}
NUM_HUMAN_ANSWERS = 10


@dataclass(frozen=True)
class VQAQuestion:
    """Ground truth of one question: its 10 human answers and its two official type labels."""

    answers: tuple[str, ...]
    question_type: str = ""
    answer_type: str = ""


@dataclass
class VQAScores:
    """Scores in percent. ``overall`` etc. are rounded as the official code rounds them; the
    ``*_unrounded`` fields keep full precision. ``per_question`` maps question id -> rounded percent."""

    version: str
    overall: float
    per_answer_type: dict[str, float]
    per_question_type: dict[str, float]
    per_question: dict[Any, float]
    overall_unrounded: float
    per_answer_type_unrounded: dict[str, float]
    per_question_type_unrounded: dict[str, float]
    per_question_unrounded: dict[Any, float] = field(repr=False)
    num_questions: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary (question ids become strings, as JSON object keys must)."""
        return {
            "metric": "vqa_accuracy",
            "version": self.version,
            "version_description": VQA_EVAL_VERSIONS[self.version],
            "num_questions": self.num_questions,
            "overall": self.overall,
            "per_answer_type": self.per_answer_type,
            "per_question_type": self.per_question_type,
            "overall_unrounded": self.overall_unrounded,
            "per_answer_type_unrounded": self.per_answer_type_unrounded,
            "per_question_type_unrounded": self.per_question_type_unrounded,
            "per_question": {str(k): v for k, v in self.per_question.items()},
        }


def _check_version(version: str) -> None:
    if version not in VQA_EVAL_VERSIONS:
        raise ConfigError(f"unknown VQA evaluation version {version!r}; valid: {sorted(VQA_EVAL_VERSIONS)}")


def vqa_accuracy(prediction: str, answers: Sequence[str], version: str = "current") -> float:
    """Accuracy in [0, 1] of one prediction against the human answers (official soft score).

    The same float the official code computes (same operations in the same order).
    """
    _check_version(version)
    if version == "current":
        gts = [clean_whitespace(a) for a in answers]
        pred = clean_whitespace(prediction)
        if len(set(gts)) > 1:
            gts = [process_digit_article(process_punctuation(a)) for a in gts]
            pred = process_digit_article(process_punctuation(pred))
    else:  # "2017"
        pred = process_digit_article(process_punctuation(clean_whitespace(prediction)))
        gts = list(answers)
        if len(set(gts)) > 1:
            gts = [process_punctuation(a) for a in gts]
    per_left_out = []
    for i in range(len(gts)):
        matches = sum(1 for j, gt in enumerate(gts) if j != i and gt == pred)
        per_left_out.append(min(1, float(matches) / 3))
    return float(sum(per_left_out)) / len(per_left_out)


def _mean_percent(values: list[float]) -> float:
    # Same expression as the official setAccuracy: 100*float(sum(x))/len(x).
    return 100 * float(sum(values)) / len(values)


def vqa_scores(
    predictions: Mapping[Any, str],
    ground_truth: Mapping[Any, VQAQuestion],
    version: str = "current",
    decimals: int = 2,
    source: object = None,
) -> VQAScores:
    """Score predictions (question id -> answer) against ground truth (question id -> question).

    Like the official ``loadRes``, the two id sets must be equal; any difference is an error that
    names the ids. Questions are visited in ground-truth order (the official annotation order).
    ``source`` names the predictions file in error messages.
    """
    _check_version(version)
    if not predictions:
        raise DataError("no predictions to score", file=source)
    missing = [qid for qid in ground_truth if qid not in predictions]
    extra = [qid for qid in predictions if qid not in ground_truth]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} question ids have no prediction (first: {missing[:5]})")
        if extra:
            parts.append(f"{len(extra)} predicted question ids are not in the ground truth (first: {extra[:5]})")
        raise DataError("predictions and ground truth have different question ids: " + "; ".join(parts),
                        file=source, field="question_id")
    per_question: dict[Any, float] = {}
    by_question_type: dict[str, list[float]] = {}
    by_answer_type: dict[str, list[float]] = {}
    for qid, question in ground_truth.items():
        if len(question.answers) != NUM_HUMAN_ANSWERS:
            raise DataError(f"expected {NUM_HUMAN_ANSWERS} human answers, found {len(question.answers)}",
                            record=qid, field="answers")
        prediction = predictions[qid]
        if not isinstance(prediction, str):
            raise DataError(f"answer must be a string, got {type(prediction).__name__}", file=source,
                            record=qid, field="answer")
        acc = vqa_accuracy(prediction, question.answers, version)
        per_question[qid] = acc
        by_question_type.setdefault(question.question_type, []).append(acc)
        by_answer_type.setdefault(question.answer_type, []).append(acc)
    accs = list(per_question.values())
    qtype_unrounded = {k: _mean_percent(v) for k, v in by_question_type.items()}
    atype_unrounded = {k: _mean_percent(v) for k, v in by_answer_type.items()}
    overall = _mean_percent(accs)
    return VQAScores(
        version=version,
        overall=round(overall, decimals),
        per_answer_type={k: round(v, decimals) for k, v in atype_unrounded.items()},
        per_question_type={k: round(v, decimals) for k, v in qtype_unrounded.items()},
        per_question={k: round(100 * v, decimals) for k, v in per_question.items()},
        overall_unrounded=overall,
        per_answer_type_unrounded=atype_unrounded,
        per_question_type_unrounded=qtype_unrounded,
        per_question_unrounded={k: 100 * v for k, v in per_question.items()},
        num_questions=len(accs),
    )
