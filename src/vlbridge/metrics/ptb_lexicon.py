"""The macros of Stanford CoreNLP's ``PTBLexer.flex`` (names as there) as Python regular expressions: the
vocabulary the rules of :mod:`vlbridge.metrics.ptb_tokenizer` are written in. JFlex 1.4 reads UTF-16 code
units, so classes are limited to the Basic Multilingual Plane.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable


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
LETTER_CHAR = f"[{_LETTER_RANGES}]"
DIGIT = f"[{_DIGIT_RANGES}]"
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
LETTER = f"(?:{LETTER_CHAR}|{_SPLET}|{_EXTRA_LETTERS})"
_LETTER_OR_DIGIT = f"(?:{LETTER}|{DIGIT})"
_ALNUM_CHAR = f"(?:{LETTER_CHAR}|{DIGIT})"  # [:letter:]|[:digit:] (single characters)
SPACE = r"[ \t\u00A0\u2000-\u200A\u3000]"
NEWLINE = r"(?:\r\n|[\r\n\u2028\u2029\u000B\u000C\u0085])"
SPACENL = f"(?:{SPACE}|{NEWLINE})"
SGML = (r"<(?:[!?][A-Za-z\-][^>\r\n]*|[A-Za-z][A-Za-z0-9_:.\-]*(?: +(?:[A-Za-z][A-Za-z0-9_:.\-]*"
        r"|[A-Za-z][A-Za-z0-9_:.\-]* *= *(?:'[^'\r\n]*'|\"[^\"\r\n]*\")))* *\/?"
        r"|\/[A-Za-z][A-Za-z0-9_:.\-]*) *>")
SENTEND = f"{SPACENL}(?:{SPACENL}|[A-Z]|{SGML})"
DATE = f"{DIGIT}{{1,2}}[\\-\\/]{DIGIT}{{1,2}}[\\-\\/]{DIGIT}{{2,4}}"
NUM = f"(?:{DIGIT}*(?:[.:,\\u00AD\\u066B\\u066C]{DIGIT}+)+|{DIGIT}+)"
NUMBER = f"[\\-+]?{NUM}"
SUBSUPNUM = r"[\u207A\u207B\u208A\u208B]?(?:[\u2070\u00B9\u00B2\u00B3\u2074-\u2079]+|[\u2080-\u2089]+)"
FRAC = f"(?:{DIGIT}{{1,4}}[\\- \\u00A0])?{DIGIT}{{1,4}}(?:\\\\?\\/|\\u2044){DIGIT}{{1,4}}"
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
    f"|{APOS}(?i:em)|[A-HJ-XZn]{APOSETCETERA}{LETTER_CHAR}{{2}}{LETTER_CHAR}*|{APOS}[2-9]0(?i:s)"
    f"|{APOS}(?i:till?)|{LETTER_CHAR}+[aeiouyAEIOUY]{APOSETCETERA}[aeiouA-Z]{LETTER_CHAR}*"
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
SENTENCE_STARTERS = (
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
