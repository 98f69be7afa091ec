"""BLEU-1..4 exactly as the COCO caption toolkit (``pycocoevalcap/bleu``) computes it.

Input is already tokenised text (tokens joined by spaces; see :mod:`.ptb_tokenizer`). Conventions of
the toolkit, kept on purpose:

- modified n-gram precision with counts clipped by the maximum count in any one reference;
- the effective reference length of an image is the reference length *closest* to the candidate
  length (ties go to the shorter reference);
- corpus BLEU sums matches, candidate n-gram counts and lengths over all images before dividing
  (it is not the mean of per-image BLEU);
- smoothing: every precision is ``(matches + 1e-15) / (total + 1e-9)``, so a zero precision gives a
  tiny positive score instead of a zero division;
- brevity penalty ``exp(1 - r/c)`` applied when ``c < r``, with the same 1e-15 / 1e-9 guards.

Per-image BLEU uses the same formula on one image (it is what the toolkit reports per image).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

_TINY = 1e-15  # added to numerators (toolkit: "so that if guess is 0 still return 0")
_SMALL = 1e-9  # added to denominators


def ngram_counts(words: Sequence[str], n: int) -> dict[tuple[str, ...], int]:
    """Counts of all 1..n-grams, inserted in the toolkit's order (by order k, then by position)."""
    counts: dict[tuple[str, ...], int] = {}
    for k in range(1, n + 1):
        for i in range(len(words) - k + 1):
            gram = tuple(words[i:i + k])
            counts[gram] = counts.get(gram, 0) + 1
    return counts


def _image_stats(candidate: str, references: Sequence[str], n: int) -> tuple[int, int, list[int], list[int]]:
    """(candidate length, closest reference length, candidate n-gram totals, clipped matches)."""
    ref_lengths = []
    max_ref_counts: dict[tuple[str, ...], int] = {}
    for ref in references:
        words = ref.split()
        ref_lengths.append(len(words))
        for gram, count in ngram_counts(words, n).items():
            max_ref_counts[gram] = max(max_ref_counts.get(gram, 0), count)
    words = candidate.split()
    length = len(words)
    closest = min((abs(ref_len - length), ref_len) for ref_len in ref_lengths)[1]
    totals = [max(0, length - k + 1) for k in range(1, n + 1)]
    matches = [0] * n
    for gram, count in ngram_counts(words, n).items():
        matches[len(gram) - 1] += min(max_ref_counts.get(gram, 0), count)
    return length, closest, totals, matches


def _bleu_from_stats(length: float, ref_length: float, totals: Sequence[int], matches: Sequence[int], n: int) -> list[float]:
    scores = []
    product = 1.0
    for k in range(n):
        product *= (float(matches[k]) + _TINY) / (float(totals[k]) + _SMALL)
        scores.append(product ** (1.0 / (k + 1)))  # geometric mean of the first k+1 precisions
    ratio = (length + _TINY) / (ref_length + _SMALL)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def bleu(references: Mapping[Any, Sequence[str]], candidates: Mapping[Any, str], n: int = 4
         ) -> tuple[list[float], dict[Any, list[float]]]:
    """Corpus BLEU-1..n and per-image BLEU-1..n.

    Args:
        references: image id -> tokenised reference captions (at least one each).
        candidates: image id -> one tokenised candidate caption; same ids as ``references``.

    Returns:
        (``[BLEU-1, ..., BLEU-n]`` for the corpus, ``{image id: [BLEU-1, ..., BLEU-n]}``), in [0, 1].
    """
    if set(references) != set(candidates):
        raise ValueError("references and candidates must have the same image ids")
    total_len, total_ref_len = 0, 0
    total_totals, total_matches = [0] * n, [0] * n
    per_image: dict[Any, list[float]] = {}
    for image_id, refs in references.items():
        length, ref_len, totals, matches = _image_stats(candidates[image_id], refs, n)
        total_len += length
        total_ref_len += ref_len
        for k in range(n):
            total_totals[k] += totals[k]
            total_matches[k] += matches[k]
        per_image[image_id] = _bleu_from_stats(length, ref_len, totals, matches, n)
    return _bleu_from_stats(total_len, total_ref_len, total_totals, total_matches, n), per_image
