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

PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
"""Tokens the toolkit removes after tokenising (upper-case bracket names never match: see above)."""

# ---------------------------------------------------------------------------------------------
# Macros (names as in PTBLexer.flex). JFlex 1.4 reads UTF-16 code units, so classes are limited
# to the Basic Multilingual Plane.


def _bmp_ranges(keep: Callable[[str], bool]) -> str:
    """Character-class body (ranges) of the BMP characters whose Unicode category passes ``keep``."""
    parts, start = [], None
    for code in range(0x10000 + 1):
        inside = code < 0x10000 and not 0xD800 <= code < 0xE000 and keep(unicodedata.category(chr(code)))
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            parts.append(f"\\u{start:04X}" + (f"-\\u{code - 1:04X}" if code - 1 > start else ""))
            start = None
    return "".join(parts)


_LETTER_RANGES = _bmp_ranges(lambda cat: cat.startswith("L"))  # Java Character.isLetter
_DIGIT_RANGES = _bmp_ranges(lambda cat: cat == "Nd")  # Java Character.isDigit
_LETTER_CHAR = f"[{_LETTER_RANGES}]"
_DIGIT = f"[{_DIGIT_RANGES}]"
_SPLET = r"&(?i:[aeiou](?:acute|grave|uml));"
_EXTRA_LETTERS = (
    r"[\u00AD\u0237-\u024F\u02C2-\u02C5\u02D2-\u02DF\u02E5-\u02FF\u0300-\u036F\u0370-\u037D\u0384\u0385"
    r"\u03CF\u03F6\u03FC-\u03FF\u0483-\u0487\u04CF\u04F6-\u04FF\u0510-\u0525\u055A-\u055F\u0591-\u05BD"
    r"\u05BF\u05C1\u05C2\u05C4\u05C5\u05C7\u0615-\u061A\u063B-\u063F\u064B-\u065E\u0670\u06D6-\u06EF"
    r"\u06FA-\u06FF\u070F\u0711\u0730-\u074F\u0750-\u077F\u07A6-\u07B1\u07CA-\u07F5\u07FA\u0900-\u0903"
    r"\u093C\u093E-\u094E\u0951-\u0955\u0962-\u0963\u0981-\u0983\u09BC-\u09C4\u09C7\u09C8\u09CB-\u09CD"
    r"\u09D7\u09E2\u09E3\u0A01-\u0A03\u0A3C\u0A3E-\u0A4F\u0A81-\u0A83\u0ABC-\u0ACF\u0B82\u0BBE-\u0BC2"
    r"\u0BC6-\u0BC8\u0BCA-\u0BCD\u0C01-\u0C03\u0C3E-\u0C56\u0D3E-\u0D44\u0D46-\u0D48\u0E30-\u0E3A"
    r"\u0E47-\u0E4E\u0EB1-\u0EBC\u0EC8-\u0ECD]"
)
LETTER = f"(?:{_LETTER_CHAR}|{_SPLET}|{_EXTRA_LETTERS})"
_LETTER_OR_DIGIT = f"(?:{LETTER}|{_DIGIT})"
_ALNUM_CHAR = f"(?:{_LETTER_CHAR}|{_DIGIT})"  # [:letter:]|[:digit:] (single characters)
SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
NEWLINE = r"(?:\r\n|[\r\n\u2028\u2029\u000B\u000C\u0085])"
SPACENL = f"(?:{SPACE}|{NEWLINE})"
SGML = (r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?: +(?:[A-Za-z][A-Za-z0-9_:.\-]*"
        r"|[A-Za-z][A-Za-z0-9_:.\-]* *= *(?:'[^'\r\n]*'|\"[^\"\r\n]*\")))* *\/?"
        r"|\/[A-Za-z][A-Za-z0-9_:.\-]*) *>")
SENTEND = f"{SPACENL}(?:{SPACENL}|[A-Z]|{SGML})"
DATE = f"{_DIGIT}{{1,2}}[\\-\\/]{_DIGIT}{{1,2}}[\\-\\/]{_DIGIT}{{2,4}}"
NUM = f"(?:{_DIGIT}*(?:[.:,\\u00AD\\u066B\\u066C]{_DIGIT}+)+|{_DIGIT}+)"
NUMBER = f"[\\-+]?{NUM}"
SUBSUPNUM = r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)"
FRAC = f"(?:{_DIGIT}{{1,4}}[\\- \\u00A0])?{_DIGIT}{{1,4}}(?:\\\\?\\/|\\u2044){_DIGIT}{{1,4}}"
FRAC2 = r"[\u00BC\u00BD\u00BE\u2153-\u215E]"
DOLSIGN = r"(?:[A-Z]*\$|#)"
DOLSIGN2 = r"[\u00A2\u00A3\u00A4\u00A5\u0080\u20A0\u20AC\u060B\u0E3F\u20A4\uFFE0\uFFE1\uFFE5\uFFE6]"
WORD = f"{LETTER}{_LETTER_OR_DIGIT}*(?:[.!?]{LETTER}{_LETTER_OR_DIGIT}*)*"
APOS = r"(?:['\u0092\u2019]|(?i:&apos;))"
APOSETCETERA = f"(?:{APOS}|[`\\u0091\\u2018\\u201B])"
HYPHEN = r"[\-_\u058A\u2010\u2011]"
_THING_PART = f"(?:[dDoOlL]{APOSETCETERA}{_ALNUM_CHAR})?{_ALNUM_CHAR}+"
THING = f"{_THING_PART}(?:{HYPHEN}{_THING_PART})*"
SPAMP = r"(?i:&amp;)"
THINGA = f"[A-Z]+(?:(?:[+&]|{SPAMP})[A-Z]+)+"
THING3 = r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?\/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"
ACRO = r"(?:[A-Za-z](?:\.[A-Za-z])*|(?i:canada|sino|korean|eu|japan|non)-(?i:u\.s)|(?i:u\.s\.-)(?i:u\.k|u\.s\.s\.r))"
HTHING = r"[A-Za-z0-9][A-Za-z0-9.,\u00AD]*(?:-(?:[A-Za-z0-9\u00AD]+|" + ACRO + r"\.))+"
REDAUX = f"{APOS}(?:[msdMSD]|(?i:re|ve|ll))"
SWORD = r"[A-Za-z\u00AD]*[A-MO-Za-mo-z]\u00AD*"
SREDAUX = f"(?i:n){APOSETCETERA}(?i:t)"
APOWORD = (
    f"(?:{APOS}(?i:n){APOS}?|[lLdDjJ]{APOS}|(?i:dunkin){APOS}|(?i:somethin){APOS}|(?i:ol){APOS}"
    f"|{APOS}(?i:em)|[A-HJ-XZn]{APOSETCETERA}{_LETTER_CHAR}{{2}}{_LETTER_CHAR}*|{APOS}[2-9]0(?i:s)"
    f"|{APOS}(?i:till?)|{_LETTER_CHAR}+[aeiouyAEIOUY]{APOSETCETERA}[aeiouA-Z]{_LETTER_CHAR}*"
    f"|{APOS}(?i:cause)|(?i:nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)|[oO]{APOSETCETERA}[oO])"
)
FULLURL = r"(?i:https?)://[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},\-]"
LIKELYURL = (
    r"(?:(?:(?i:www)\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-zA-Z]{2,4})"
    r"|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},-_$]+\.)+(?i:com|net|org|edu)))"  # sic: ",-_" is a range
    r"(?:\/[^ \t\n\f\r\"<>|()]+[^ \t\n\f\r\"<>|.!?(){},\-])?"
)
EMAIL = (r"(?:(?i:&lt;)|<)?[a-zA-Z0-9][^ \t\n\f\r\"<>|()\u00A0{}]*@(?:[^ \t\n\f\r\"<>|(){}.\u00A0]+\.)*"
         r"[^ \t\n\f\r\"<>|(){}.\u00A0]+(?:(?i:&gt;)|>)?")
FILENAME_EXT = (r"(?i:bat|bmp|bz2|c|class|cgi|cpp|dll|doc|docx|exe|gif|gz|h|htm|html|jar|java|jpeg|jpg|mov|mp3|pdf"
                r"|php|pl|png|ppt|ps|py|sql|tar|txt|wav|x|xml|zip|3gp|wm[va]|avi|flv|mov|mp[34g])")
FILENAME = f"{_ALNUM_CHAR}+(?:[\\-._/]{_ALNUM_CHAR}+)*\\." + FILENAME_EXT
TWITTER = f"(?:@[a-zA-Z_][a-zA-Z_0-9]*|#{LETTER}+)"  # hashtags: letters only
# Abbreviations (3.4.1 lists, established by probing the Java tool). Literal words are caseless
# except where a one-letter class ([A]rk) makes the first letter case sensitive.
ABMONTH = r"(?i:jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)"
ABDAYS = r"(?i:mon|tue|tues|wed|thu|thurs|fri)"
ABSTATE = (r"(?:(?i:ala|ariz)|A(?i:z)|A(?i:rk)|(?i:calif|colo|conn|ct|dak)|D(?i:el)|(?i:fla|ga)|I(?i:ll)"
           r"|(?i:ind|kans?|ky)|L(?i:a)|M(?i:ass)|(?i:md|mich|minn)|M(?i:iss)|(?i:mo|mont|neb|nev|okla)"
           r"|O(?i:re)|P(?i:a)|(?i:penn|tenn)|T(?i:ex)|(?i:va|vt)|W(?i:ash)|(?i:wisc?|wyo))")
ABCOMP = r"(?i:inc|cos?|corp|pp?t[ye]s?|ltd|plc|rt|bancorp|bhd|assn|univ|intl|sys)"
ABNUM = r"(?i:tel|est|ext|sq)"
ABPTIT = r"(?i:jr|sr|bros|(?:ed|ph)\.d|blvd|rd|esq)"
ABBREV1 = f"(?:{ABMONTH}|{ABDAYS}|{ABSTATE}|{ABCOMP}|{ABNUM}|{ABPTIT}|(?i:etc|al|seq|bldg))\\."
ABTITLE = (r"(?:(?i:mr|mrs|ms)|M(?i:iss)|(?i:drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev"
           r"|maj|sgt|cpl|pvt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|mt|ft|adj|adv"
           r"|asst|assoc|ens|insp|mlle|mme|msgr|sfc))")
ABCOMP2 = r"(?i:invt|elec|natl|m[ft]g|dept)"
ABBREV4 = f"(?:{ABTITLE}|(?i:vs|alex|wm|jos|cie|a\\.k\\.a|cf|treas|ph)|{ACRO}|{ABCOMP2})"
ABBREV2 = f"{ABBREV4}\\."
ACRONYM = f"{ACRO}\\."
ABBREV3 = r"(?i:ca|figs?|prop|nos?|art|bldg|pp|op)\."
_SENTENCE_STARTERS = (
    r"(?:About|According|Additionally|After|An|A|As|At|But|Earlier|He|Her|Here|However|If|In|It|Last|Many"
    r"|More|Mr\.|Ms\.|Now|Once|One|Other|Our|She|Since|So|Some|Such|That|The|Then|There|These|They|This"
    r"|We|When|While|What|Yet|You)"
)
PHONE = (r"(?:(?:\([0-9]{2,3}\)[ \u00A0]?|(?:\+\+?)?(?:[0-9]{2,4}[\- \u00A0])?[0-9]{2,4}[\- \u00A0])"
         r"[0-9]{3,4}[\- \u00A0]?[0-9]{3,5}|(?:(?:\+\+?)?[0-9]{2,4}\.)?[0-9]{2,4}\.[0-9]{3,4}\.[0-9]{3,5})")
DBLQUOT = r"(?:\"|(?i:&quot;))"
SMILEY = r"[<>]?[:;=][\-o\*']?[\(\)DPdpO\\{@\|\[\]]"
ASIANSMILEY = (r"(?:[\-\^x=~<>']_[\-\^x=~<>']|\([\-\^x=~<>'][_.]?[\-\^x=~<>']\)"
               r"|\([\^x=~<>']-[\^x=~<>'`]\))")
TBSPEC = (r"(?:-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-|(?i:c\.d\.s)|(?i:pro)-|(?i:anti)-|(?i:s)(?:&|&amp;)(?i:p)-500"
          r"|(?i:s)(?:&|&amp;)(?i:ls)|(?i:cap)" + APOS + r"(?i:n)|(?i:c)" + APOS + r"(?i:est))")
TBSPEC2 = f"{APOS}[0-9][0-9]"
LDOTS = r"(?:\.{3,5}|(?:\.[ \u00A0]){2,4}\.|[\u0085\u2026])"
QUOTES = (f"(?:''|[`\\u2018\\u2019\\u201A\\u201B\\u201C\\u201D\\u0091\\u0092\\u0093\\u0094"
          f"\\u201E\\u201F\\u2039\\u203A\\u00AB\\u00BB]{{1,2}}|{APOS})")  # longest alternatives first
MISCSYMBOL = (r"[+%&~\^|\\\u00A6\u00A7\u00A8\u00A9\u00AC\u00AE\u00AF\u00B0-\u00B3\u00B4-\u00BA\u00D7\u00F7"
              r"\u0387\u05BE\u05C0\u05C3\u05C6\u05F3\u05F4\u0600-\u0603\u0606-\u060A\u060C\u0614\u061B"
              r"\u061E\u066A\u066D\u0703-\u070D\u07F6\u07F7\u07F8\u0964\u0965\u0E4F\u1FBD\u2016\u2017"
              r"\u2020-\u2023\u2030-\u2038\u203B\u203E-\u2042\u2044\u207A-\u207F\u208A-\u208E\u2100-\u214F"
              r"\u2190-\u21FF\u2200-\u2BFF\u3012\u30FB\uFF01-\uFF0F\uFF1A-\uFF20\uFF3B-\uFF40\uFF5B-\uFF65]")
INSENTP = r"[,;:\u3001]"

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
    (r"(?i:y)" + APOS, _LETTER_CHAR, _same),  # APOWORD2
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
    (ACRONYM, f"{SPACENL}+(?:{_SENTENCE_STARTERS}|{SGML})(?:{SPACENL}|[?!])", ("acronym",)),
    (ABBREV3, f"{SPACENL}?{_DIGIT}", _same),
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
