"""Fuzzing recipes: random values under real and unknown keys, damaged YAML text and ``--set`` strings load into a
Recipe that holds exactly the values given, or fail with a ConfigError naming the key or the file and position;
never another exception, and never a value silently dropped or replaced."""

from __future__ import annotations

import math
import re
import types
import typing
from dataclasses import fields
from pathlib import Path

import yaml
from fuzz_profiles import FUZZ
from hypothesis import event, given
from hypothesis import strategies as st

from vlbridge.errors import ConfigError
from vlbridge.recipe import VALID, Recipe, load_recipe

SECTIONS = {f.name: f.type for f in fields(Recipe)}
RECIPE_FILES = sorted((Path(__file__).resolve().parents[1] / "recipes").rglob("*.yaml"))

ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
              st.sampled_from(["1e-4", "3", "nan", "raise", "skip", "llava", "fp32", ""])),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=4), inner, max_size=2)),
    max_leaves=6)


def hints(section: str) -> dict[str, object]:
    return typing.get_type_hints(getattr(Recipe(), section).__class__)


def plausible(hint) -> st.SearchStrategy:
    """Values of the declared type, in and around the valid ranges, so that many recipes load."""
    args = typing.get_args(hint)
    if type(None) in args:
        return st.one_of(st.none(), plausible(next(a for a in args if a is not type(None))))
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return st.one_of(*(plausible(a) for a in args))
    origin = typing.get_origin(hint) or hint
    if origin is bool:
        return st.booleans()
    if origin is int:
        return st.integers(-2, 600)
    if origin is float:
        return st.one_of(st.floats(-0.5, 1.5), st.sampled_from([0, 1, 1e-4, "1e-4", float("nan"), float("inf")]))
    if origin is str:
        return st.one_of(st.sampled_from(["raise", "skip", "reject", "truncate_prompt", "stop", "llava", "fp32"]),
                         st.text(max_size=6))
    if origin is list:
        return st.lists(st.one_of(st.floats(0, 0.999), st.text(max_size=4)), max_size=3)
    return st.dictionaries(st.text(max_size=4), st.integers(), max_size=2)


@st.composite
def recipe_values(draw):
    """{section: {key: value}}: real keys with plausible or any values, sometimes an unknown key or a non-mapping."""
    values = {}
    for section in draw(st.lists(st.sampled_from(sorted(SECTIONS) + ["bogus_section"]), unique=True, max_size=3)):
        if section == "bogus_section" or draw(st.integers(0, 30)) == 0:
            values[section] = draw(ANY)
            continue
        types = hints(section)
        keys = draw(st.lists(st.sampled_from(sorted(types)), unique=True, max_size=4))
        if draw(st.integers(0, 9)) == 0:
            keys.append(draw(st.sampled_from(["bogus_key", 7])))
        values[section] = {key: draw(plausible(types[key]) if key in types and draw(st.integers(0, 3)) else ANY)
                           for key in keys}
    return values


def same(given, loaded) -> bool:
    if isinstance(given, float) and math.isnan(given):
        return isinstance(loaded, float) and math.isnan(loaded)
    if isinstance(given, str) and isinstance(loaded, float):  # YAML reads 1e-4 (no dot) as a string
        return float(given) == loaded
    if isinstance(given, list):
        return isinstance(loaded, list) and len(given) == len(loaded) and all(map(same, given, loaded))
    return given == loaded and (type(given) is type(loaded) or isinstance(loaded, float))


def conforms(value, hint) -> bool:
    """``value`` is of the declared type (list elements included; bool is not an int, a float is finite)."""
    args = typing.get_args(hint)
    origin = typing.get_origin(hint)
    if origin is list:
        return isinstance(value, list) and all(conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if args:  # a union
        return any(conforms(value, a) for a in args)
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, float) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def check_loaded(recipe: Recipe, values: dict) -> None:
    """Every value given is the recipe's value (no silent drop), of its declared type, and within its checked
    range."""
    for section, keys in values.items():
        for key, value in keys.items():
            assert same(value, getattr(getattr(recipe, section), key)), f"{section}.{key}={value!r} was not kept"
    for section in SECTIONS:
        types = hints(section)
        for f in fields(getattr(recipe, section)):
            value = getattr(getattr(recipe, section), f.name)
            assert conforms(value, types[f.name]), f"{section}.{f.name}={value!r} is not a {types[f.name]}"
    for key, (test, _) in VALID.items():
        section, name = key.split(".")
        assert test(getattr(getattr(recipe, section), name)), f"{key} out of range was accepted"


@FUZZ
@given(recipe_values())
def test_recipe_values_load_exactly_or_fail_naming_the_key(tmp_path, values):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(values, allow_unicode=True))
    values = yaml.safe_load(path.read_text())  # what the file says (PyYAML writes "\x85" and reads it as " ")
    try:
        recipe = load_recipe(path)
    except ConfigError as error:
        event("outcome: ConfigError")
        message = str(error)
        named = [s for s in values if str(s) in message] + [f"{s}.{k}" for s, keys in values.items()
                                                       if isinstance(keys, dict) for k in keys if f"{s}.{k}" in message]
        assert named, f"the error names no key given: {message}"
        return
    event("outcome: loaded")
    check_loaded(recipe, values)


MARKS = st.sampled_from(list(":[]{}-#'\"\t\n ,&*!|>%@`") + ["\n  ", ": ", "- ", "\ufeff", "\x00", "\x85", "é"])


@FUZZ
@given(st.sampled_from(RECIPE_FILES), st.lists(st.tuples(st.sampled_from(["insert", "delete", "duplicate line"]),
                                                          st.integers(0, 10**6), MARKS), min_size=1, max_size=3))
def test_damaged_recipe_text_loads_or_fails_naming_the_file(tmp_path, source, edits):
    text = source.read_text()
    for kind, where, mark in edits:
        event(f"edit: {kind}")
        where %= len(text) + 1
        if kind == "insert":
            text = text[:where] + mark + text[where:]
        elif kind == "delete":
            text = text[:where] + text[where + len(mark):]
        else:
            lines = text.splitlines(keepends=True)
            line = where % len(lines)
            text = "".join(lines[:line + 1] + lines[line:])
    path = tmp_path / "damaged.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        load_recipe(path)
    except ConfigError as error:
        message = str(error)
        event("outcome: ConfigError, " + ("YAML position" if "invalid YAML at line" in message else "a key"))
        assert "invalid YAML" not in message or re.search(r"invalid YAML at line \d+, column \d+: ", message), message
        assert str(path) in message or "recipe key" in message or "data." in message or "train." in message \
            or "model." in message or "eval." in message, message
        return
    event("outcome: loaded")
    assert not duplicate_keys(text), "a key given twice was loaded (one of its values silently dropped)"


def duplicate_keys(text: str) -> bool:
    """True if some YAML mapping of ``text`` holds a key twice (read independently of the recipe loader)."""
    def walk(node) -> bool:
        if isinstance(node, yaml.MappingNode):
            keys = [k.value for k, _ in node.value if isinstance(k, yaml.ScalarNode)]
            return len(keys) != len(set(keys)) or any(walk(v) for _, v in node.value)
        if isinstance(node, yaml.SequenceNode):
            return any(walk(v) for v in node.value)
        return False
    return walk(yaml.compose(text, Loader=yaml.SafeLoader))


def set_item(section: str, key: str, value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10**6)
    return f"{section}.{key}=" + text.strip().removesuffix("...").strip()


@st.composite
def set_strings(draw):
    """``section.key=value`` for a real key with a plausible value, or anything."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.one_of(st.text(max_size=12), st.sampled_from(["train.steps", "=3", "x.y=1", "train=1",
                                                                    "train.steps=[1, 2", "train.steps.x=1"])))
    section = draw(st.sampled_from(sorted(SECTIONS)))
    key = draw(st.sampled_from(sorted(hints(section))))
    return set_item(section, key, draw(plausible(hints(section)[key])))


@FUZZ
@given(st.lists(set_strings(), min_size=1, max_size=4))
def test_set_strings_load_or_fail_naming_what_is_wrong(overrides):
    try:
        recipe = load_recipe(None, overrides)
    except ConfigError as error:
        event("outcome: ConfigError")
        assert str(error), overrides
        return
    event("outcome: loaded")
    values: dict = {}
    for item in overrides:  # each --set puts its value at its key path; the last of a key wins, as documented
        key, _, raw = item.partition("=")
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = yaml.safe_load(raw)
    check_loaded(recipe, values)
