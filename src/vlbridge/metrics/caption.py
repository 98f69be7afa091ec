"""Caption scores as the COCO caption toolkit reports them: PTB tokenisation, then BLEU-1..4 and CIDEr-D.

Mirrors ``pycocoevalcap.eval.COCOEvalCap`` (without METEOR, ROUGE-L and SPICE, which need Java):
references and candidates are tokenised separately, each as one newline-joined text in image order,
then scored. Scores are on the toolkit's scale (BLEU in [0, 1], CIDEr-D around 0-10 x 0.1, e.g. 1.17;
papers usually print them x100). Remember that CIDEr-D depends on the whole evaluated image set
(its document frequencies), so scores on different subsets are not comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlbridge.errors import DataError
from vlbridge.metrics.bleu import bleu
from vlbridge.metrics.cider import cider_d
from vlbridge.metrics.ptb_tokenizer import ptb_tokenize

METRIC_NAMES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "CIDEr")


def tokenize_references(references: Mapping[Any, Sequence[str]]) -> dict[Any, list[str]]:
    """Tokenise all references in one pass (image order, then caption order), as the toolkit does."""
    flat = [caption for captions in references.values() for caption in captions]
    tokens = iter(ptb_tokenize(flat))
    return {image_id: [next(tokens) for _ in captions] for image_id, captions in references.items()}


def caption_scores(references: Mapping[Any, Sequence[str]], predictions: Mapping[Any, str],
                   source: object = None) -> dict[str, Any]:
    """Corpus and per-image BLEU-1..4 and CIDEr-D of raw (untokenised) captions.

    Args:
        references: image id -> its reference captions, in the ground-truth file's order.
        predictions: image id -> one predicted caption; must cover exactly the same images.
        source: the predictions file, named in error messages.

    Returns:
        ``{"corpus": {metric: score}, "per_image": {image id: {metric: score}}, "num_images": n}``.
    """
    if not predictions:
        raise DataError("no predictions to score", file=source)
    missing = [i for i in references if i not in predictions]
    extra = [i for i in predictions if i not in references]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} image ids have no prediction (first: {missing[:5]})")
        if extra:
            parts.append(f"{len(extra)} predicted image ids are not in the ground truth (first: {extra[:5]})")
        raise DataError("predictions and ground truth have different image ids: " + "; ".join(parts), file=source,
                        field="image_id")
    for image_id, refs in references.items():
        if not refs:
            raise DataError("image has no reference caption", record=image_id, field="caption")
    for image_id, caption in predictions.items():
        if not isinstance(caption, str):
            raise DataError(f"caption must be a string, got {type(caption).__name__}", file=source, record=image_id,
                            field="caption")
    ids = list(references)
    refs_tok = tokenize_references(references)
    cands_tok = dict(zip(ids, ptb_tokenize([predictions[i] for i in ids])))
    bleu_corpus, bleu_per_image = bleu(refs_tok, cands_tok, 4)
    cider_corpus, cider_per_image = cider_d(refs_tok, cands_tok)
    corpus = {f"Bleu_{k + 1}": bleu_corpus[k] for k in range(4)} | {"CIDEr": cider_corpus}
    per_image = {
        i: {f"Bleu_{k + 1}": bleu_per_image[i][k] for k in range(4)} | {"CIDEr": cider_per_image[i]} for i in ids
    }
    return {"metric": "coco_caption", "corpus": corpus, "per_image": per_image, "num_images": len(ids)}
