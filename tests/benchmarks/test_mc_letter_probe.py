"""The letter probe: the hint states the answer before the options; without it, questions that differ only
in their answer get one choice, right for one of them, by letter and by option text alike."""

from __future__ import annotations


import pytest
from benchmark_scripts import load_script


@pytest.fixture(scope="module")
def probe():
    return load_script("mc_letter_probe")


def test_the_hint_states_the_answer_before_the_options(probe):
    text = "<image>\nQuestion: What color?\nOptions: (A) red (B) blue\nAnswer with the option's letter."
    assert probe.hinted(text, "blue") == ("<image>\nQuestion: What color? (Hint: the answer is blue.)\n"
                                          "Options: (A) red (B) blue\nAnswer with the option's letter.")


def test_probe_scores_letters_and_option_texts(probe, tiny_llama_dir):
    from vlbridge.data.prompts import format_multiple_choice
    from vlbridge.data.sample import Sample, Turn
    from vlbridge.models.language_model import LanguageModel
    from vlbridge.text.chat_format import chat_format_for
    from vlbridge.weights.language import load_language_model

    model, tokenizer = load_language_model(str(tiny_llama_dir))
    lm, chat_format = LanguageModel(model.eval()), chat_format_for(tokenizer, "auto", None)
    choices = ["red", "blue", "green"]
    samples = [Sample(f"q{i}", (Turn("user", "<image>\n" + format_multiple_choice("What color?", choices)),
                                Turn("assistant", "ABC"[i])), meta={"choices": choices, "answer_index": i})
               for i in range(3)]
    scores = probe.probe(lm, tokenizer, chat_format, samples)
    assert set(scores) == {"letter", "letter_hint", "text", "text_hint"}
    # without a hint the three questions are one prompt: the same choice, right for exactly one of them
    assert scores["letter"] == pytest.approx(100 / 3) and scores["text"] == pytest.approx(100 / 3)
    assert all(0 <= v <= 100 for v in scores.values())
