"""Answer normalisation of the official VQA evaluation, quirks included.

Behaviour follows ``PythonEvaluationTools/vqaEvaluation/vqaEval.py`` of the official repository
(GT-Vision-Lab/VQA; ``processPunctuation`` and ``processDigitArticle``), which is identical in the
current code and in the 2017 code that LAVIS copied. Every quirk is kept on purpose, because papers
report numbers computed with it:

- punctuation: for each listed mark, if the mark is followed or preceded by a space anywhere in the
  answer, or if the answer holds a comma between two digits anywhere, the mark is deleted everywhere;
  otherwise it becomes a space. Apostrophes, colons, periods, ``%``, ``#``, ``$`` ... are not listed.
- the period rule ``(?!<=\\d)(\\.)(?!\\d)`` was meant as "a period not between digits", but its first
  group is a *lookahead* for the text ``<=digit`` and never matches: every period not followed by a
  digit is removed ("2.5" stays, "5." loses its period, "1.a" loses it too).
- ``re.UNICODE`` is passed to ``sub`` as its positional *count*: at most 32 periods are removed.
- after lower-casing and splitting on white space: number words zero..ten (and "none") become digits,
  the articles a/an/the are dropped, then the contraction table maps e.g. "dont" to "don't". Its keys
  with capitals ("Im", "Ive", ...) can never match after lower-casing, and one entry maps the
  wrong way ("somebody'd" -> "somebodyd"); both are kept.

Python 3 semantics are used throughout (``\\d`` matches any Unicode decimal digit; the current
official code is Python 2, where it matched ASCII digits only: this differs only for non-ASCII digits).
"""

from __future__ import annotations

import re

# Marks handled by processPunctuation, in the official order (the order matters: each replacement
# sees the text produced by the previous ones, while the "space beside the mark" test sees the input).
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!",
)

_COMMA_BETWEEN_DIGITS = re.compile(r"(\d)(,)(\d)")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: see the module docstring
_PERIOD_COUNT = int(re.UNICODE)  # sic: the official code passes re.UNICODE (32) as `count`

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# The official contraction table, entry for entry (including the unreachable capitalised keys and
# the reversed "somebody'd" entry).
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've",
    "hasnt": "hasn't", "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've",
    "hes": "he's", "howd": "how'd", "howll": "how'll", "hows": "how's", "Id've": "I'd've",
    "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've",
    "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've",
    "somethingll": "something'll", "thats": "that's", "thered": "there'd", "thered've": "there'd've",
    "there'dve": "there'd've", "therere": "there're", "theres": "there's", "theyd": "they'd",
    "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're",
    "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're", "whats": "what's",
    "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're",
    "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've",
    "y'all'dve": "y'all'd've", "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've",
    "youll": "you'll", "youre": "you're", "youve": "you've",
}


def clean_whitespace(text: str) -> str:
    """Newlines and tabs to spaces, then strip (applied to every answer before anything else)."""
    return text.replace("\n", " ").replace("\t", " ").strip()


def process_punctuation(text: str) -> str:
    """The official ``processPunctuation``: delete or space out marks, then drop periods."""
    out = text
    # The test looks at the *input* text for every mark, exactly like the official loop.
    delete_all = _COMMA_BETWEEN_DIGITS.search(text) is not None
    for mark in PUNCTUATION:
        if delete_all or (mark + " " in text) or (" " + mark in text):
            out = out.replace(mark, "")
        else:
            out = out.replace(mark, " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def process_digit_article(text: str) -> str:
    """The official ``processDigitArticle``: lower-case, number words to digits, drop articles,
    restore contractions."""
    words = []
    for word in text.lower().split():
        word = NUMBER_WORDS.get(word, word)
        if word not in ARTICLES:
            words.append(word)
    return " ".join(CONTRACTIONS.get(word, word) for word in words)


def normalize_answer(text: str) -> str:
    """Full normalisation the official code applies to a prediction: white space, punctuation,
    then digits/articles/contractions."""
    return process_digit_article(process_punctuation(clean_whitespace(text)))
