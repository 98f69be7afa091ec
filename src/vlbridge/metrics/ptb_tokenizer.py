"""The COCO caption toolkit's tokenisation, reproduced in Python (no Java at run time).

``pycocoevalcap`` joins all captions with newlines, runs Stanford CoreNLP 3.4.1's ``PTBTokenizer``
(``-preserveLines -lowerCase``) on them, splits the output back into lines and drops the tokens in
:data:`PTB_PUNCTUATION`. This module is a longest-match lexer with the rules of that tokenizer
(``PTBLexer.flex``; the 3.4.1 rule set was reconstructed from the 2012-2017 sources and checked token
by token against the Java tool, see ``tests/fixtures/metrics/ptb_disagreements.json``). Like JFlex,
at every position the rule with the longest match wins (trailing context counts toward the length),
ties go to the earlier rule, and the lexer is caseless for literal words but not for character
classes. Quirks of the reference kept on purpose:

- parentheses become ``-lrb-``/``-rrb-`` after lower-casing, so they are *not* removed by the
  punctuation filter (which lists ``-LRB-``); ``[ ]`` and ``{ }`` become ``-lsb- -rsb- -lcb- -rcb-``;
- clitics are split (``do n't``, ``dog 's``), ``cannot`` -> ``can not``, ``gonna`` -> ``gon na``;
- a few tokens keep an internal non-breaking space (``5 1/2``, phone numbers), later split by the
  scorers' ``str.split()``;
- characters outside the Basic Multilingual Plane (emoji, ...) and unknown symbols are deleted.

Known divergence, by design: the Java tool also treats ``\\r``, ``\\x0b``, ``\\x0c``, ``\\x85``,
U+2028 and U+2029 inside a caption as line breaks, which shifts every later caption onto the wrong
image in ``pycocoevalcap``; here they are plain white space. Letters assigned in Unicode after
version 6 are letters here but unknown (deleted) to the 2014 Java lexer.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence

from vlbridge.metrics.ptb_lexicon import (
    ABBREV1, ABBREV2, ABBREV3, ABBREV4, ACRO, ACRONYM, APOS, APOWORD, ASIANSMILEY, DATE, DBLQUOT, DIGIT,
    DOLSIGN, DOLSIGN2, EMAIL, FILENAME, FRAC, FRAC2, FULLURL, HTHING, INSENTP, LDOTS, LETTER_CHAR, LIKELYURL,
    MISCSYMBOL, NEWLINE, NUMBER, PHONE, QUOTES, REDAUX, SENTENCE_STARTERS, SENTEND, SGML, SMILEY, SPACE,
    SPACENL, SPAMP, SREDAUX, SUBSUPNUM, SWORD, TBSPEC, TBSPEC2, THING, THING3, THINGA, TWITTER, WORD,
)

PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
"""Tokens the toolkit removes after tokenising (upper-case bracket names never match: see above)."""

# ---------------------------------------------------------------------------------------------
# Token transforms (the rule actions).


def _same(text: str) -> str:
    return text


def _remove_soft_hyphens(text: str) -> str:
    out = text.replace("\u00AD", "")
    return out if out else "-"


def _normalize_amp(text: str) -> str:
    return re.sub(r"(?i:&amp;)", "&", text)


def _nbsp(text: str) -> str:
    return text.replace(" ", "\u00A0")


def _latex_quotes(text: str, probably_left: bool) -> str:
    if probably_left:
        text = re.sub(r"(?i:&apos;)|'", "`", text)
        text = re.sub(r"\"|(?i:&quot;)", "``", text)
    else:
        text = re.sub(r"(?i:&apos;)|'", "'", text)
        text = re.sub(r"\"|(?i:&quot;)", "''", text)
    text = re.sub(r"[\u0091\u2018\u201B\u2039]", "`", text)
    text = re.sub(r"[\u0092\u2019\u203A]", "'", text)
    text = re.sub(r"[\u0093\u201C\u00AB]", "``", text)
    return re.sub(r"[\u0094\u201D\u00BB]", "''", text)


def _left_quote(text: str) -> str:
    return _latex_quotes(text, True)


def _right_quote(text: str) -> str:
    return _latex_quotes(text, False)


def _currency(text: str) -> str:
    text = text.replace("\u00A2", "cents").replace("\u00A3", "#")
    return re.sub(r"[\u0080\u00A4\u20A0\u20AC]", "$", text)


_FRACTIONS = {"\u00BC": "1/4", "\u00BD": "1/2", "\u00BE": "3/4", "\u2153": "1/3", "\u2154": "2/3"}


def _fraction(text: str) -> str:
    return "".join(_FRACTIONS.get(ch, ch) for ch in text)


def _phone(text: str) -> str:
    return _nbsp(text).replace("(", "-LRB-").replace(")", "-RRB-")


def _const(value: str) -> Callable[[str], str]:
    return lambda _text: value


def _smiley(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


# ---------------------------------------------------------------------------------------------
# Rules in PTBLexer.flex order: (head, trailing context or None, action). Actions: a transform of
# the matched head, "skip" (white space), "newline", or ("pushback", n) = emit all but the last n
# characters and lex those again; ("acronym",) and ("abbrev_end",) are the period-duplicating rules.

_Action = object
_RULES: list[tuple[str, str | None, _Action]] = [
    (r"(?i:c\+\+|[cf]#)", None, _same),  # PROG_LANGS
    (f"(?i:cannot)|{APOS}(?i:twas)", None, ("pushback", 3)),  # ASSIMILATIONS3
    (f"{APOS}(?i:tis)|(?i:gonna|gotta|lemme|gimme|wanna)", None, ("pushback", 2)),  # ASSIMILATIONS2
    (SGML, None, _nbsp),
    (r"&(?i:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", None, _const("--")),  # SPMDASH
    (SPAMP, None, _const("&")),
    (r"&(?i:ht|tl|ur|lr|qc|ql|qr|odq|cdq|#[0-9]+);", None, _same),  # SPPUNC
    (WORD, REDAUX, _remove_soft_hyphens),
    (SWORD, SREDAUX, _remove_soft_hyphens),
    (WORD, None, _remove_soft_hyphens),
    (APOWORD, None, _same),
    (r"(?i:y)" + APOS, LETTER_CHAR, _same),  # APOWORD2
    (FULLURL, None, _same),
    (LIKELYURL, None, _same),
    (EMAIL, None, _same),
    (TWITTER, None, _same),
    (REDAUX, r"[^A-Za-z]", _right_quote),
    (SREDAUX, None, _right_quote),
    (DATE, None, _same),
    (NUMBER, None, _remove_soft_hyphens),
    (SUBSUPNUM, None, _same),
    (FRAC, None, _nbsp),
    (FRAC2, None, _fraction),
    (TBSPEC, None, _normalize_amp),
    (THING3, None, _same),
    (DOLSIGN, None, _same),
    (DOLSIGN2, None, _currency),
    (ACRONYM, f"{SPACENL}+(?:{SENTENCE_STARTERS}|{SGML})(?:{SPACENL}|[?!])", ("acronym",)),
    (ABBREV3, f"{SPACENL}?{DIGIT}", _same),
    (r"(?i:pt[ey]|co)\.", f"{SPACE}(?i:ltd|lim)", _same),
    (ABBREV1, SENTEND, ("abbrev_end",)),
    (ABBREV1, r"[\s\S]{2}", _same),  # sic: two characters of context make it beat WORD ("Inc.a")
    (ABBREV1, None, ("abbrev_end",)),  # only at the end of the text
    (ABBREV2, None, _same),
    (ABBREV4, SPACE, _same),
    (ACRO, SPACENL, _same),
    (TBSPEC2, SPACENL, _same),
    (FILENAME, f"{SPACENL}|[.?!,\"'<]", _same),
    (f"{WORD}\\.", INSENTP, _remove_soft_hyphens),
    (PHONE, None, _phone),
    (DBLQUOT, r"[A-Za-z0-9$]", _left_quote),
    (DBLQUOT, None, _right_quote),
    (r"\x7F", None, "skip"),
    (r"<|(?i:&lt;)", None, _const("<")),
    (r">|(?i:&gt;)", None, _const(">")),
    (SMILEY, r"[^A-Za-z0-9]", _smiley),
    (ASIANSMILEY, None, _smiley),
    (r"\{", None, _const("-LCB-")),
    (r"\}", None, _const("-RCB-")),
    (r"\[", None, _const("-LSB-")),
    (r"\]", None, _const("-RSB-")),
    (r"\(", None, _const("-LRB-")),
    (r"\)", None, _const("-RRB-")),
    (r"-+", None, lambda t: "--" if 3 <= len(t) <= 4 else t),  # HYPHENS
    (LDOTS, None, _const("...")),
    (r"@+|#+|_+", None, _same),  # FNMARKS
    (r"\*+|(?:\\\*){1,3}", None, _same),  # ASTS
    (INSENTP, None, _same),
    (r"[?!]+", None, _same),
    (r"[.\u00A1\u00BF\u037E\u0589\u061F\u06D4\u0700-\u0702\u07FA\u3002]", None, _same),
    (r"=", None, _same),
    (r"\/", None, _same),
    (f"{HTHING}\\.", INSENTP, _remove_soft_hyphens),
    (HTHING, None, _remove_soft_hyphens),
    (f"{THING}\\.", INSENTP, _same),
    (THING, None, _same),
    (f"{THINGA}\\.", INSENTP, _normalize_amp),
    (THINGA, None, _normalize_amp),
    (r"'", r"[A-Za-z][^ \t\n\r\u00A0]", _left_quote),
    (REDAUX, None, _right_quote),
    (QUOTES, None, _right_quote),
    (r"<<|>>", None, _same),  # FAKEDUCKFEET
    (MISCSYMBOL, None, _same),
    (r"\x00|" + SPACE + r"+|[\u200B\u200E\u200F\uFEFF]", None, "skip"),
    (NEWLINE, None, "newline"),
    (r"(?i:&nbsp;)", None, "skip"),
]

_COMPILED = [
    (re.compile(head if trail is None else f"(?:{head})(?=({trail}))"), action)
    for head, trail, action in _RULES
]
# Fast paths for the commonest tokens, each only where no other rule can match longer (checked
# against the Java tool like everything else): plain ASCII words followed by white space, a comma or
# a sentence-final period (unless the word is an abbreviation), and a lone comma or period.
_FAST_WORD = re.compile(r"[A-Za-z]+(?=[ \n]|\Z|[.,](?:[ \n]|\Z))")
_ASSIMILATIONS = frozenset(["cannot", "gonna", "gotta", "lemme", "gimme", "wanna"])
_ABBREVIATION = re.compile(f"(?:{ABBREV1}|{ABBREV2}|{ABBREV3}|(?i:pt[ey]|co)\\.)")
_FAST_PUNCT = re.compile(r"[.,](?=\n|\Z| [^.])")
_SPACES = re.compile(SPACE + "+")


def _fast_token(text: str, pos: int) -> re.Match | None:
    word = _FAST_WORD.match(text, pos)
    if word is not None:
        end = word.end()
        if word.group().lower() in _ASSIMILATIONS:
            return None
        if end < len(text) and text[end] == "." and _ABBREVIATION.fullmatch(text, pos, end + 1):
            return None
        return word
    return _FAST_PUNCT.match(text, pos)


def _lex(text: str) -> list[str | None]:
    """Tokens of ``text``; ``None`` marks a line break."""
    tokens: list[str | None] = []
    pos, end = 0, len(text)
    while pos < end:
        fast = _fast_token(text, pos)
        if fast is not None:
            tokens.append(fast.group())
            pos = fast.end()
            continue
        if text[pos] in " \t":  # no rule but SPACES starts with these: skip the whole run
            pos = _SPACES.match(text, pos).end()
            continue
        best_len, best = 0, None
        for pattern, action in _COMPILED:
            m = pattern.match(text, pos)
            if m is None:
                continue
            total = m.end() - pos + (len(m.group(1)) if pattern.groups else 0)
            if total > best_len:
                best_len, best = total, (m, action)
        if best is None:  # untokenizable character: deleted (the reference's "firstDelete")
            pos += 1
            continue
        m, action = best
        head = m.group()
        if action == "skip":
            pos = m.end()
        elif action == "newline":
            tokens.append(None)
            pos = m.end()
        elif isinstance(action, tuple) and action[0] == "pushback":
            tokens.append(head[: -action[1]])
            pos = m.end() - action[1]
        elif isinstance(action, tuple) and action[0] == "acronym":
            if len(head) == 2:  # "I." before a sentence start: the letter, then the period alone
                tokens.append(head[0])
            else:  # "U.S." then a duplicated "."
                tokens.append(head)
            pos = m.end() - 1
        elif isinstance(action, tuple) and action[0] == "abbrev_end":
            tokens.append(head)  # "Inc." then a duplicated "."
            pos = m.end() - 1
        else:
            tokens.append(action(head))
            pos = m.end()
    return tokens


def _in_word(ch: str) -> bool:
    return ch.isalnum() or unicodedata.category(ch).startswith("M")


def _cased(ch: str) -> bool:
    return ch.lower() != ch or ch.upper() != ch


def _final_sigma(token: str, i: int) -> bool:
    """Java's Final_Sigma test: a cased letter before, and none after, within the word (uncased
    characters such as digits are skipped; Python's ``str.lower`` stops at them instead)."""
    j = i - 1
    while j >= 0 and _in_word(token[j]):
        if _cased(token[j]):
            j = i + 1
            while j < len(token) and _in_word(token[j]):
                if _cased(token[j]):
                    return False
                j += 1
            return True
        j -= 1
    return False


def _java_lower(token: str) -> str:
    """``String.toLowerCase`` of Java (the reference lower-cases each token with it)."""
    if "\u03a3" not in token:
        return token.lower()
    return "".join(("\u03c2" if _final_sigma(token, i) else "\u03c3") if ch == "\u03a3" else ch.lower()
                   for i, ch in enumerate(token))


_LINE_BREAKS = re.compile(r"\r\n|[\r\u2028\u2029\u000B\u000C\u0085]")


def ptb_tokenize_lines(captions: Sequence[str]) -> list[str]:
    """What the Java tool prints for ``captions`` joined by newlines: one lower-cased line each,
    tokens separated by single spaces, punctuation not yet removed."""
    # Caption-internal line breaks are spaces (pycocoevalcap replaces "\n"; we also replace the
    # other line separators instead of letting them shift later captions, see module docstring).
    text = "\n".join(_LINE_BREAKS.sub(" ", c.replace("\n", " ")) for c in captions)
    lines: list[list[str]] = [[]]
    for token in _lex(text):
        if token is None:
            lines.append([])
        else:
            lines[-1].append(_java_lower(token))
    if len(lines) != len(captions):  # cannot happen: every line break left in the text is a separator
        raise RuntimeError(f"tokenizer produced {len(lines)} lines for {len(captions)} captions")
    return [" ".join(line) for line in lines]


def ptb_tokenize(captions: Sequence[str]) -> list[str]:
    """Tokenise captions exactly as ``pycocoevalcap.tokenizer.PTBTokenizer`` does.

    Captions are tokenised as one newline-joined text (as the toolkit does: the lexer's look-ahead
    can see the next caption). Returns one string per caption: lower-cased tokens joined by single
    spaces, with the toolkit's punctuation tokens removed.
    """
    if not captions:
        return []
    lines = ptb_tokenize_lines(captions)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in PTB_PUNCTUATION) for line in lines]
