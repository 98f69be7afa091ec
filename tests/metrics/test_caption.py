"""BLEU-1..4 and CIDEr-D against pycocoevalcap's own scorers on the same tokens, and the whole
caption pipeline against pycocoevalcap with its Java tokenizer."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
from java_ptb import pycocoevalcap_tokenize, skip_without_java
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider

from vlbridge.errors import DataError
from vlbridge.metrics.bleu import bleu
from vlbridge.metrics.caption import caption_scores
from vlbridge.metrics.cider import cider_d
from vlbridge.metrics.ptb_tokenizer import ptb_tokenize

FIXTURES = Path(__file__).parents[1] / "fixtures" / "metrics"
CAPTIONS = [r["caption"] for r in json.loads((FIXTURES / "ptb_captions.json").read_text(encoding="utf-8"))]
needs_java = skip_without_java()


def _random_corpus(seed: int, num_images: int, captions: list[str]):
    rng = random.Random(seed)
    refs, cands = {}, {}
    for image_id in range(num_images):
        refs[image_id] = [rng.choice(captions) for _ in range(rng.randint(1, 6))]
        cands[image_id] = rng.choice(refs[image_id]) if rng.random() < 0.3 else rng.choice(captions)
        if rng.random() < 0.2:  # partial overlap: cut a reference
            words = rng.choice(refs[image_id]).split()
            cands[image_id] = " ".join(words[: rng.randint(0, len(words))])
    return refs, cands


@pytest.mark.parametrize("seed, num_images", [(0, 1), (1, 7), (2, 300)])
def test_bleu_and_cider_equal_pycocoevalcap_on_the_same_tokens(seed, num_images):
    tokens = [t for t in ptb_tokenize(CAPTIONS) if t]
    refs, cands = _random_corpus(seed, num_images, tokens)
    ref_bleu, ref_bleu_img = Bleu(4).compute_score(refs, {i: [c] for i, c in cands.items()}, verbose=0)
    ref_cider, ref_cider_img = Cider().compute_score(refs, {i: [c] for i, c in cands.items()})
    our_bleu, our_bleu_img = bleu(refs, cands)
    our_cider, our_cider_img = cider_d(refs, cands)
    for k in range(4):
        assert abs(our_bleu[k] - ref_bleu[k]) <= 1e-9
        for n, image_id in enumerate(refs):
            assert abs(our_bleu_img[image_id][k] - ref_bleu_img[k][n]) <= 1e-9
    assert abs(our_cider - ref_cider) <= 1e-9
    for n, image_id in enumerate(refs):
        assert abs(our_cider_img[image_id] - ref_cider_img[n]) <= 1e-9


def test_perfect_and_empty_candidates():
    refs = {1: ["a dog runs on grass", "a dog is running"], 2: ["two cats sleep on a sofa"]}
    scores, _ = bleu(refs, {1: "a dog runs on grass", 2: "two cats sleep on a sofa"})
    assert scores[0] == pytest.approx(1.0) and scores[3] == pytest.approx(1.0)
    scores, _ = bleu(refs, {1: "a dog", 2: "two cats"})  # 2-word candidates: no 4-grams, smoothed to ~0
    assert scores[0] == pytest.approx(math.exp(1 - 10 / 4)) and scores[3] < 1e-3  # brevity penalty, r=4+6
    scores, per_image = bleu(refs, {1: "", 2: ""})
    assert all(s < 1e-6 for s in scores) and per_image[1][0] < 1e-6
    cider, _ = cider_d(refs, {1: "", 2: ""})
    assert cider == 0.0


@needs_java
def test_caption_scores_equal_the_pycocoevalcap_pipeline():
    refs_raw, cands_raw = _random_corpus(3, 120, CAPTIONS)
    # reference: pycocoevalcap's tokenizer (Java) then its scorers, as COCOEvalCap.evaluate does
    flat = [c for caps in refs_raw.values() for c in caps]
    tok_iter = iter(pycocoevalcap_tokenize(flat))
    gts = {i: [next(tok_iter) for _ in caps] for i, caps in refs_raw.items()}
    res = dict(zip(refs_raw, ([c] for c in pycocoevalcap_tokenize([cands_raw[i] for i in refs_raw]))))
    ref_bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    ref_cider, ref_cider_img = Cider().compute_score(gts, res)
    ours = caption_scores(refs_raw, cands_raw)
    for k in range(4):
        assert ours["corpus"][f"Bleu_{k + 1}"] == pytest.approx(ref_bleu[k], abs=1e-9)
    assert ours["corpus"]["CIDEr"] == pytest.approx(ref_cider, abs=1e-9)
    assert [ours["per_image"][i]["CIDEr"] for i in refs_raw] == pytest.approx(list(ref_cider_img), abs=1e-9)


def test_bad_input_errors():
    refs = {1: ["a dog"], 2: ["a cat"]}
    with pytest.raises(DataError, match="no predictions"):
        caption_scores(refs, {}, source="res.json")
    with pytest.raises(DataError, match=r"image_id.*1 image ids have no prediction \(first: \[2\]\)"):
        caption_scores(refs, {1: "a dog"})
    with pytest.raises(DataError, match=r"not in the ground truth \(first: \[9\]\)"):
        caption_scores(refs, {1: "a", 2: "b", 9: "c"})
    with pytest.raises(DataError, match=r"record 2.*'caption'"):
        caption_scores(refs, {1: "a", 2: None})
    with pytest.raises(DataError, match=r"record 2.*no reference"):
        caption_scores({1: ["a"], 2: []}, {1: "a", 2: "b"})
