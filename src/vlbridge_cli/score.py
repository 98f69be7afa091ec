"""``vlbridge score``: score a predictions file in the official result format against official ground truth.

No model is involved, so any model's outputs can be scored the same way::

    vlbridge score --task caption --gt captions_val2014.json --pred results.json
    vlbridge score --task vqa --questions Q.json --annotations A.json --pred results.json

Scores are printed (corpus / overall first) and written as JSON (``--out``, default next to the
predictions: ``X.scores.json`` for ``X.results.json`` or ``X.json``) with per-image or per-question values.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from vlbridge.errors import ConfigError, DataError

HELP = "Score predictions in the official result format (COCO captions, VQA) against official ground truth."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, choices=["caption", "vqa"],
                        help="caption: COCO caption results [{image_id, caption}]; vqa: VQA results [{question_id, answer}]")
    parser.add_argument("--pred", required=True, type=Path, help="predictions file in the official result format")
    parser.add_argument("--gt", type=Path, help="caption: official COCO caption annotation JSON (images + annotations)")
    parser.add_argument("--subset", action="store_true",
                        help="caption: score only the ground-truth images that have a prediction (as the COCO "
                             "example does with params['image_id'] = cocoRes.getImgIds()); default: every "
                             "ground-truth image must have one")
    parser.add_argument("--questions", type=Path, help="vqa: official questions JSON")
    parser.add_argument("--annotations", type=Path, help="vqa: official annotations JSON")
    parser.add_argument("--vqa-version", default="current", choices=["current", "2017"],
                        help="vqa: official evaluation version: current (GT-Vision-Lab/VQA today, default) or 2017 "
                             "(the code LAVIS copied)")
    parser.add_argument("--out", type=Path, help="where to write the scores JSON (default: beside --pred, X.scores.json "
                                                 "for X.results.json or X.json)")


def default_out(pred: Path) -> Path:
    """``X.scores.json`` beside ``X.results.json`` (what ``vlbridge eval`` writes) or ``X.json``."""
    for suffix in (".results.json", ".json"):
        if pred.name.endswith(suffix) and len(pred.name) > len(suffix):
            return pred.with_name(pred.name[: -len(suffix)] + ".scores.json")
    return pred.with_name(pred.name + ".scores.json")


def require_utf8(path: Path) -> None:
    """JSON files are UTF-8 (RFC 8259); another encoding is an error naming the file and the first bad byte."""
    if not path.is_file():
        return  # the reader says it is missing
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataError(f"not UTF-8 text (byte {error.start}: 0x{data[error.start]:02x}); JSON files must be UTF-8: "
                        "re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)", file=path) from None


def _score_caption(args: argparse.Namespace) -> dict[str, Any]:
    from vlbridge.datasets.coco import coco_caption_references
    from vlbridge.datasets.results import read_caption_results
    from vlbridge.metrics.caption import caption_scores

    if args.gt is None:
        raise ConfigError("--task caption needs --gt COCO_ANNOTATIONS.json")
    references, _ = coco_caption_references(args.gt)
    predictions = read_caption_results(args.pred)
    if args.subset:
        unknown = [i for i in predictions if i not in references]
        references = {i: refs for i, refs in references.items() if i in predictions} if not unknown else references
    scores = caption_scores(references, predictions, source=args.pred)
    scores["per_image"] = {str(k): v for k, v in scores["per_image"].items()}
    scores.update(ground_truth=str(args.gt), predictions=str(args.pred), subset=bool(args.subset))
    return scores


def _score_vqa(args: argparse.Namespace) -> dict[str, Any]:
    from vlbridge.datasets.results import read_vqa_results
    from vlbridge.datasets.vqav2 import vqav2_ground_truth
    from vlbridge.eval.vqa import vqa_breakdown
    from vlbridge.metrics.vqa import vqa_scores

    if args.questions is None or args.annotations is None:
        raise ConfigError("--task vqa needs --questions Q.json and --annotations A.json")
    ground_truth = vqav2_ground_truth(args.questions, args.annotations)
    predictions = read_vqa_results(args.pred)
    scored = vqa_scores(predictions, ground_truth, version=args.vqa_version, source=args.pred)
    scores = {**scored.to_dict(), "by_type": vqa_breakdown(scored, ground_truth)}  # + counts, standard errors
    scores.update(questions=str(args.questions), annotations=str(args.annotations), predictions=str(args.pred))
    return scores


def run(args: argparse.Namespace) -> int:
    from vlbridge.eval.by_type import format_breakdown

    require_utf8(args.pred)
    if args.task == "caption":
        if args.questions or args.annotations:
            raise ConfigError("--questions/--annotations are for --task vqa")
        scores = _score_caption(args)
        print(f"images: {scores['num_images']}")
        for name, value in scores["corpus"].items():
            print(f"{name}: {value:.6f}")
    else:
        if args.gt or args.subset:
            raise ConfigError("--gt/--subset are for --task caption")
        scores = _score_vqa(args)
        print(f"questions: {scores['num_questions']}  (VQA evaluation version: {scores['version']})")
        print(f"overall: {scores['overall']:.2f}")
        print(format_breakdown(scores["by_type"], "by type (percent ± standard error; official rounding in the JSON):"))
    out = args.out or default_out(args.pred)
    out.write_text(json.dumps(scores, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"scores written to {out}")
    return 0
