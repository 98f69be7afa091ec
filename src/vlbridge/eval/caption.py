"""Captioning: one caption per image, scored with BLEU-1..4 and CIDEr-D as the COCO caption toolkit.

Input samples are what :func:`vlbridge.datasets.coco.read_coco_captions` or
:func:`~vlbridge.datasets.coco.read_karpathy_split` give: one per image, ``meta["image_id"]`` and all
reference captions in ``meta["answers"]``. Scores depend on the whole evaluated image set (CIDEr-D's
document frequencies), so numbers on a ``--limit`` subset are not comparable to full-split numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

from vlbridge.data.sample import Sample
from vlbridge.errors import DataError
from vlbridge.eval.result import (Answer, TaskResult, answer_all, prompt_only, require_images, require_items,
                                  require_meta)
from vlbridge.eval.task_prompts import check_template, render_prompt
from vlbridge.metrics.caption import METRIC_NAMES, caption_scores


def evaluate_captions(answer: Answer, samples: Sequence[Sample], template: str | None = None) -> TaskResult:
    """Caption every image with ``template`` (default :data:`~vlbridge.eval.task_prompts.TASK_PROMPTS`
    ``["caption"]``) and score against its reference captions."""
    template = check_template("caption", template)
    require_items(samples, "images")
    references: dict[object, list[str]] = {}
    for s in samples:
        require_meta(s, "image_id", "answers")
        image_id = s.meta["image_id"]
        if image_id in references:
            raise DataError(f"image id {image_id} appears twice", file=s.source or None, record=s.id,
                            field="meta.image_id")
        if not s.meta["answers"]:
            raise DataError("no reference caption", file=s.source or None, record=s.id, field="meta.answers")
        references[image_id] = list(s.meta["answers"])
    require_images(samples)
    text = render_prompt("caption", template, has_image=True)
    captions = answer_all(answer, [prompt_only(s, text) for s in samples])
    predictions = dict(zip(references, captions))
    scored = caption_scores(references, predictions)
    items = [{"image_id": image_id, "prediction": predictions[image_id], "references": refs,
              "scores": scored["per_image"][image_id]} for image_id, refs in references.items()]
    return TaskResult(
        task="caption",
        prompt=template,
        metric={"name": scored["metric"], "metrics": list(METRIC_NAMES),
                "version": "COCO caption toolkit (pycocoevalcap): PTB tokenisation, BLEU-1..4, CIDEr-D",
                "scale": "toolkit scale (BLEU in [0, 1], CIDEr-D x 1; papers print x 100)"},
        scores={**scored["corpus"], "num_images": scored["num_images"]},
        predictions=items,
        official_format="caption",
        official=predictions,
    )
