"""CIDEr-D exactly as the COCO caption toolkit (``pycocoevalcap/cider``, the scorer behind "CIDEr").

Vedantam et al., "CIDEr: Consensus-based Image Description Evaluation" (CVPR 2015), in the toolkit's
"-D" form. Input is tokenised text. For every image, candidate c and references r_1..r_m:

    g(x)_k   = tf(x, ngram) * (log(N) - log(max(1, df(ngram))))      for the n-grams of order k
    sim_k    = sum_ngram min(g(c), g(r)) * g(r) / (|g(c)| |g(r)|)    (clipped; skipped if a norm is 0)
             * exp(-(l_c - l_r)^2 / (2 sigma^2))                      (Gaussian length penalty, sigma 6)
    CIDEr-D  = 10 * mean_k ( sum_j sim_k(c, r_j) ) / m

N is the number of images evaluated, df counts the images whose references contain the n-gram, so the
score of one image depends on the whole evaluated set. Toolkit quirk kept: the "length" l in the
penalty counts the *bigrams* of a sentence (``if n == 1: length += term_freq`` with n the 0-based
order), i.e. words - 1 for non-empty sentences. Arithmetic follows the toolkit's order of operations
(NumPy log/sqrt/mean where it uses them) so results agree to the last bit or nearly.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlbridge.metrics.bleu import ngram_counts


def _document_frequency(ref_counts: Sequence[Sequence[dict]]) -> dict[tuple[str, ...], float]:
    df: dict[tuple[str, ...], float] = {}
    for refs in ref_counts:  # one entry per image
        for gram in {gram for counts in refs for gram in counts}:
            df[gram] = df.get(gram, 0.0) + 1
    return df


def _tfidf(counts: dict, idf: dict, log_num_images: float, n: int) -> tuple[list[dict], list[float], int]:
    vec: list[dict] = [{} for _ in range(n)]
    norm = [0.0] * n
    length = 0
    for gram, tf in counts.items():
        order = len(gram) - 1
        weight = idf.get(gram)
        if weight is None:  # n-gram absent from every reference: df counts as 1, log 1 = 0
            weight = log_num_images - np.log(1.0)
        vec[order][gram] = float(tf) * weight
        norm[order] += pow(vec[order][gram], 2)
        if order == 1:  # sic: bigram count is the toolkit's "length"
            length += tf
    return vec, [np.sqrt(x) for x in norm], length


def cider_d(references: Mapping[Any, Sequence[str]], candidates: Mapping[Any, str], n: int = 4,
            sigma: float = 6.0) -> tuple[float, dict[Any, float]]:
    """Corpus CIDEr-D (mean over images) and per-image CIDEr-D.

    Args:
        references: image id -> tokenised reference captions (at least one each).
        candidates: image id -> one tokenised candidate caption; same ids as ``references``.
    """
    if set(references) != set(candidates):
        raise ValueError("references and candidates must have the same image ids")
    ids = list(references)
    ref_counts = [[ngram_counts(r.split(), n) for r in references[i]] for i in ids]
    df = _document_frequency(ref_counts)
    log_num_images = np.log(float(len(ids)))
    idf = {gram: log_num_images - np.log(max(1.0, d)) for gram, d in df.items()}
    penalty_denominator = 2 * sigma ** 2
    per_image: dict[Any, float] = {}
    for image_id, refs in zip(ids, ref_counts):
        vec, norm, length = _tfidf(ngram_counts(candidates[image_id].split(), n), idf, log_num_images, n)
        score = np.zeros(n)
        for ref in refs:
            vec_r, norm_r, length_r = _tfidf(ref, idf, log_num_images, n)
            delta = float(length - length_r)
            sims = np.zeros(n)
            for k in range(n):
                for gram, value in vec[k].items():
                    ref_value = vec_r[k].get(gram, 0.0)
                    sims[k] += min(value, ref_value) * ref_value
                if norm[k] != 0 and norm_r[k] != 0:
                    sims[k] /= norm[k] * norm_r[k]
                sims[k] *= math.e ** (-(delta ** 2) / penalty_denominator)
            score += sims
        per_image[image_id] = float(np.mean(score) / len(refs) * 10.0)
    return float(np.mean(np.array(list(per_image.values())))), per_image
