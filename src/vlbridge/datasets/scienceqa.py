"""ScienceQA: ``problems.json``, ``pid_splits.json``, ``images/<split>/<id>/image.png`` and the optional
``captions.json`` (image captions used as extra context by LLaVA/MemVP). One :class:`Sample` per problem.

The prompt is the QCM prompt of :mod:`vlbridge.prompts.scienceqa`, with ``<image>`` first when the
problem has an image; ``meta`` keeps everything evaluation needs (question, context, choices,
answer_index, subject, grade and the context modality flags of the ScienceQA breakdown).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from vlbridge.data.image_paths import image_path
from vlbridge.data.llava_json import ON_ERROR, SampleList, SkippedRecord
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.datasets.json_io import load_json, require
from vlbridge.errors import DataError
from vlbridge.metrics.multiple_choice import MCQuestion
from vlbridge.prompts.scienceqa import answer_text, context_text, qcm_prompt

SCIENCEQA_SPLITS = ("train", "val", "test", "minival", "minitrain", "trainval")


def read_scienceqa(root: str | Path, split: str = "test", use_captions: bool = False,
                   require_images: bool = True, on_error: Literal["raise", "skip"] = "raise",
                   allow_outside_images: bool = False) -> SampleList:
    """Samples of one split of a ScienceQA folder (``problems.json``, ``pid_splits.json``, ``images/``).

    ``use_captions`` appends ``captions.json``'s caption of the image to the context, as LLaVA's and
    MemVP's ScienceQA prompts do. With ``require_images`` a problem whose ``image`` field names a file
    that does not exist is an error (instead of silently becoming a text-only question).
    ``on_error="skip"`` leaves a bad problem out and lists it in the result's ``skipped`` (as
    :func:`vlbridge.data.llava_json.read_llava_json`); a missing file or split always raises.
    A problem's ``image`` must name a file inside its folder ``images/SPLIT/PID/`` unless
    ``allow_outside_images`` (:mod:`vlbridge.data.image_paths`). Each sample's :attr:`Sample.position` is
    ``"SPLIT[i]"``: the problem is the i-th id of that split's list in ``pid_splits.json``.
    """
    if on_error not in ON_ERROR:
        raise DataError(f"on_error must be one of {list(ON_ERROR)}, got {on_error!r}", file=root)
    root = Path(root)
    problems_file, splits_file = root / "problems.json", root / "pid_splits.json"
    problems = load_json(problems_file, dict)
    splits = load_json(splits_file, dict)
    if split not in splits:
        raise DataError(f"unknown split {split!r}; the file has {sorted(splits)}", file=splits_file, field=split)
    if not isinstance(splits[split], list):
        raise DataError(f"must be a list of problem ids, found {type(splits[split]).__name__}", file=splits_file,
                        field=split)
    captions: dict = {}
    if use_captions:
        captions_file = root / "captions.json"
        captions = require(load_json(captions_file, dict), "captions", dict, file=captions_file, where="top level")
    samples, skipped = [], []
    for index, pid in enumerate(splits[split]):
        pid = str(pid)
        try:
            if pid not in problems:
                raise DataError(f"problem listed in split {split!r} is missing from problems.json",
                                file=problems_file, record=pid)
            samples.append(_problem_sample(pid, problems[pid], root, split, captions, problems_file, require_images,
                                           allow_outside_images, position=f"{split}[{index}]"))
        except DataError as error:
            if on_error == "raise":
                raise
            skipped.append(SkippedRecord(index=index, id=pid, message=str(error), file=str(problems_file),
                                         position=f"{split}[{index}]"))
    return SampleList(samples, skipped)


def _problem_sample(pid: str, problem: dict, root: Path, split: str, captions: dict, file: Path,
                    require_images: bool, allow_outside_images: bool = False, position: str | None = None) -> Sample:
    question = require(problem, "question", str, file=file, where=pid)
    choices = require(problem, "choices", list, file=file, where=pid)
    answer = require(problem, "answer", int, file=file, where=pid)
    if not all(isinstance(c, str) for c in choices) or len(choices) < 2:
        raise DataError("must be a list of at least 2 strings", file=file, record=pid, field="choices")
    if not 0 <= answer < len(choices):
        raise DataError(f"answer {answer} is not an index into the {len(choices)} choices", file=file, record=pid,
                        field="answer")
    hint = problem.get("hint") or ""
    image_name = problem.get("image") or ""
    for name, value in (("hint", hint), ("image", image_name)):
        if not isinstance(value, str):
            raise DataError(f"must be a string (or null), found {type(value).__name__}", file=file, record=pid,
                            field=name)
    image = None
    if image_name:
        image = image_path(root / "images" / split / pid, image_name, allow_outside=allow_outside_images, file=file,
                           record=pid, field="image")
        if require_images and not image.is_file():
            raise DataError(f"image file {image} does not exist", file=file, record=pid, field="image")
    caption = captions.get(pid, "") if image_name else ""
    if not isinstance(caption, str):
        raise DataError(f"caption must be a string, found {type(caption).__name__}", file=file.parent / "captions.json",
                        record=pid, field="captions")
    context = context_text(hint, caption)
    prompt = qcm_prompt(question, choices, context)
    user = f"{IMAGE_PLACEHOLDER}\n{prompt}" if image_name else prompt
    return Sample(
        id=pid,
        turns=(Turn("user", user), Turn("assistant", answer_text(answer))),
        image=image,
        source=str(file),
        position=position,
        meta={
            "task": "mc", "question": question, "context": hint, "choices": list(choices), "answer_index": answer,
            "subject": problem.get("subject", ""), "grade": problem.get("grade", ""),
            "has_text_context": bool(hint), "has_image": bool(image_name), "no_context": not hint and not image_name,
            "caption": caption,
        },
    )


def scienceqa_ground_truth(samples: list[Sample]) -> dict[str, MCQuestion]:
    """problem id -> :class:`MCQuestion` (for :func:`vlbridge.metrics.multiple_choice.mc_scores`)."""
    return {
        s.id: MCQuestion(answer_index=s.meta["answer_index"], num_choices=len(s.meta["choices"]),
                         subject=s.meta["subject"], has_text_context=s.meta["has_text_context"],
                         has_image=s.meta["has_image"], grade=s.meta["grade"])
        for s in samples
    }
