"""VQAv2: the official questions JSON (``v2_OpenEnded_mscoco_val2014_questions.json``) and
annotations JSON (``v2_mscoco_val2014_annotations.json``). One :class:`Sample` per question, its
:attr:`Sample.position` the question's index in the questions file."""

from __future__ import annotations

from pathlib import Path

from vlbridge.data.image_paths import OPTION, leaves_folder
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.datasets.json_io import load_json, require
from vlbridge.errors import ConfigError, DataError
from vlbridge.metrics.vqa import NUM_HUMAN_ANSWERS, VQAQuestion

SHORT_ANSWER_INSTRUCTION = "Answer the question using a single word or phrase."
"""Appended to the question (LLaVA-1.5's VQAv2 prompt)."""


def load_vqav2_questions(questions_file: str | Path) -> dict[int, dict]:
    """question id -> {"question", "image_id"}, in file order."""
    data = load_json(questions_file, dict)
    out: dict[int, dict] = {}
    for i, q in enumerate(require(data, "questions", list, file=questions_file, where="top level")):
        where = f"questions[{i}]"
        qid = require(q, "question_id", int, file=questions_file, where=where)
        if qid in out:
            raise DataError("duplicate question id", file=questions_file, record=f"{where} question_id {qid}",
                            field="question_id")
        out[qid] = {"question": require(q, "question", str, file=questions_file, where=where),
                    "image_id": require(q, "image_id", int, file=questions_file, where=where)}
    return out


def load_vqav2_annotations(annotations_file: str | Path, strict_answers: bool = True) -> dict[int, dict]:
    """question id -> {"answers" (10 strings), "question_type", "answer_type", "multiple_choice_answer",
    "image_id"}, in file order. With ``strict_answers`` an answer list that is not 10 long is an error."""
    data = load_json(annotations_file, dict)
    out: dict[int, dict] = {}
    for i, ann in enumerate(require(data, "annotations", list, file=annotations_file, where="top level")):
        where = f"annotations[{i}]"
        qid = require(ann, "question_id", int, file=annotations_file, where=where)
        where = f"{where} (question_id {qid})"
        if qid in out:
            raise DataError("duplicate question id", file=annotations_file, record=where, field="question_id")
        answers = require(ann, "answers", list, file=annotations_file, where=where)
        texts = [require(a, "answer", str, file=annotations_file, where=f"{where}.answers[{j}]")
                 for j, a in enumerate(answers)]
        if strict_answers and len(texts) != NUM_HUMAN_ANSWERS:
            raise DataError(f"expected {NUM_HUMAN_ANSWERS} human answers, found {len(texts)}",
                            file=annotations_file, record=where, field="answers")
        out[qid] = {
            "answers": texts,
            "question_type": require(ann, "question_type", str, file=annotations_file, where=where),
            "answer_type": require(ann, "answer_type", str, file=annotations_file, where=where),
            "multiple_choice_answer": ann.get("multiple_choice_answer", ""),
            "image_id": require(ann, "image_id", int, file=annotations_file, where=where),
        }
    return out


def vqav2_ground_truth(questions_file: str | Path, annotations_file: str | Path) -> dict[int, VQAQuestion]:
    """question id -> :class:`VQAQuestion`, for :func:`vlbridge.metrics.vqa.vqa_scores`. Questions and
    annotations must cover the same question ids."""
    questions = load_vqav2_questions(questions_file)
    annotations = load_vqav2_annotations(annotations_file)
    _check_same_ids(questions, annotations, questions_file, annotations_file)
    return {qid: VQAQuestion(tuple(a["answers"]), a["question_type"], a["answer_type"])
            for qid, a in annotations.items()}


def _check_same_ids(questions: dict, annotations: dict, questions_file: object, annotations_file: object) -> None:
    only_q = [qid for qid in questions if qid not in annotations]
    only_a = [qid for qid in annotations if qid not in questions]
    if only_q or only_a:
        raise DataError(f"questions and annotations disagree: {len(only_q)} question ids without annotation "
                        f"(first: {only_q[:5]}), {len(only_a)} annotations without question (first: {only_a[:5]}) "
                        f"in {questions_file}", file=annotations_file, field="question_id")


def read_vqav2(questions_file: str | Path, annotations_file: str | Path | None = None,
               image_dir: str | Path | None = None, image_prefix: str = "COCO_val2014_",
               image_pattern: str | None = None, allow_outside_images: bool = False) -> list[Sample]:
    """Samples of VQAv2 (the test split has no annotations: prompt-only samples then).

    ``image`` is ``image_dir/{image_prefix}{image_id:012d}.jpg`` (the COCO file naming) when
    ``image_dir`` is given, or ``image_dir/image_pattern.format(image_id=...)`` with ``image_pattern``
    (e.g. ``shapes_{image_id:06d}.png``, which the Shapes export records in its manifest). The
    assistant turn is the annotators' ``multiple_choice_answer``. A pattern whose file names leave ``image_dir``
    (absolute, or ``../``) is refused unless ``allow_outside_images`` (:mod:`vlbridge.data.image_paths`).
    """
    if image_pattern is None:
        image_pattern = image_prefix.replace("{", "{{").replace("}", "}}") + "{image_id:012d}.jpg"
    try:
        distinct = image_pattern.format(image_id=0) != image_pattern.format(image_id=1)
    except (KeyError, IndexError, ValueError):
        distinct = False
    if not distinct:  # a pattern without {image_id} would give every question the same image
        raise ConfigError(f"image file pattern {image_pattern!r} must contain {{image_id}} (and no other field), "
                          f"e.g. 'COCO_val2014_{{image_id:012d}}.jpg'")
    if not allow_outside_images and leaves_folder(image_pattern.format(image_id=0)):
        raise ConfigError(f"image file pattern {image_pattern!r} leaves the image folder (an absolute path, or one "
                          f"climbing out with '..'); allow it with {OPTION} (reader argument "
                          "allow_outside_images=True)")
    questions = load_vqav2_questions(questions_file)
    annotations = load_vqav2_annotations(annotations_file) if annotations_file is not None else None
    if annotations is not None:
        _check_same_ids(questions, annotations, questions_file, annotations_file)
    root = Path(image_dir) if image_dir is not None else None
    samples = []
    for position, (qid, q) in enumerate(questions.items()):
        turns = [Turn("user", f"{IMAGE_PLACEHOLDER}\n{q['question']}\n{SHORT_ANSWER_INSTRUCTION}")]
        meta = {"task": "short", "question_id": qid, "image_id": q["image_id"], "question": q["question"]}
        if annotations is not None:
            ann = annotations[qid]
            turns.append(Turn("assistant", ann["multiple_choice_answer"] or ann["answers"][0]))
            meta.update(answers=ann["answers"], question_type=ann["question_type"], answer_type=ann["answer_type"])
        image = root / image_pattern.format(image_id=q["image_id"]) if root else None
        samples.append(Sample(id=str(qid), turns=tuple(turns), image=image, source=str(questions_file), meta=meta,
                              position=position))
    return samples
