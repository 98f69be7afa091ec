"""Can the frozen LM answer a multiple-choice question by its letter when it is told the answer?

Each Shapes multiple-choice test question is asked text-only, with a hint that states the answer
("Hint: the answer is red.") or without it, and answered two ways:
- letter: the option whose letter ("A", "B", ...) the LM finds most likely as the first answer token (the
  letter answer a bridge must teach the frozen LM to give, restricted to the valid letters);
- text: the option whose own text is most likely as the whole answer (``vlbridge.eval.choice_likelihood``),
  the question asking for the option's text.
If the hint does not raise the letter accuracy, no bridge can: the visual information a bridge adds is at
best the hint, and the LM cannot turn it into a letter. Then only training the LM itself (LoRA) or scoring
the options' texts measures what the image contributes.

    python benchmarks/mc_letter_probe.py                                # SmolLM2-135M, 160 test questions
    python benchmarks/mc_letter_probe.py --lm PATH --scenes 800 --data runs/mc_probe
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vlbridge.data.prompts import MC_INSTRUCTION, OPTION_TEXT_INSTRUCTION


def hinted(text: str, answer: str) -> str:
    """The question with the answer stated just before its options."""
    return text.replace("\nOptions:", f" (Hint: the answer is {answer}.)\nOptions:", 1)


def probe(lm, tokenizer, chat_format, samples) -> dict[str, float]:
    """Accuracy (%) of the letter and option-text choices, with and without the hint."""
    from vlbridge.batch import Collator
    from vlbridge.data.sample import Sample, Turn
    from vlbridge.eval.choice_likelihood import option_log_likelihoods

    def text_only(batch, row_losses=False):  # the LM as a model of text batches, for option_log_likelihoods
        return lm(lm.embed(batch.input_ids), batch.attention_mask, batch.labels, row_losses=row_losses)

    def no_images(samples):
        raise AssertionError("the probe is text only")

    letter_ids = [tokenizer.convert_tokens_to_ids(letter) for letter in "ABCDEFGHIJ"]
    collator = Collator(tokenizer, chat_format, no_images, image_tokens=0)
    right = {"letter": 0, "letter_hint": 0, "text": 0, "text_hint": 0}
    for s in samples:
        question = s.turns[0].text.replace("<image>\n", "")
        answer_index, choices = s.meta["answer_index"], s.meta["choices"]
        for hint in (False, True):
            asked = hinted(question, choices[answer_index]) if hint else question
            suffix = "_hint" if hint else ""
            ids = tokenizer(chat_format.render([("user", asked)]), return_tensors="pt").input_ids
            with torch.no_grad():
                hidden = lm.base(input_ids=ids).last_hidden_state[0, -1]
                logits = lm.model.get_output_embeddings()(hidden)
            letter = int(logits[letter_ids[: len(choices)]].argmax())
            right["letter" + suffix] += letter == answer_index
            text_sample = Sample(s.id, (Turn("user", asked.replace(MC_INSTRUCTION, OPTION_TEXT_INSTRUCTION)),),
                                 meta=s.meta)
            scores = option_log_likelihoods(text_only, collator, text_sample)
            right["text" + suffix] += max(range(len(scores)), key=scores.__getitem__) == answer_index
    return {k: 100 * v / len(samples) for k, v in right.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lm", default="smollm2-135m", help="registry name or local Hugging Face folder")
    parser.add_argument("--data", type=Path, default=Path("runs/mc_probe"), help="folder for the Shapes export")
    parser.add_argument("--scenes", type=int, default=800, help="Shapes scenes (the accuracy benchmark's 800)")
    parser.add_argument("--system-prompt", default="You are a helpful assistant.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from collections import Counter

    from vlbridge.data.llava_json import read_llava_json
    from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
    from vlbridge.data.shapes_export import export_shapes
    from vlbridge.models.language_model import LanguageModel
    from vlbridge.text.chat_format import chat_format_for
    from vlbridge.weights.language import load_language_model

    folder = args.data / f"shapes_n{args.scenes}_seed0"
    if not (folder / "test_mc.json").is_file():
        export_shapes(generate_shapes(ShapesConfig(n=args.scenes, seed=0)), folder, ["llava"], workers=2)
    samples = list(read_llava_json(folder / "test_mc.json", image_root=folder))
    model, tokenizer = load_language_model(args.lm)
    lm = LanguageModel(model.eval())
    chat_format = chat_format_for(tokenizer, "auto", args.system_prompt)
    scores = probe(lm, tokenizer, chat_format, samples)
    letters = Counter(s.meta["answer_index"] for s in samples)
    majority = 100 * letters.most_common(1)[0][1] / len(samples)
    print(f"{args.lm}, {len(samples)} Shapes multiple-choice test questions, text only")
    print(f"{'answer by':<24}{'no hint':>10}{'answer in hint':>16}")
    print(f"{'letter (A, B, ...)':<24}{scores['letter']:>9.1f}%{scores['letter_hint']:>15.1f}%")
    print(f"{'option text':<24}{scores['text']:>9.1f}%{scores['text_hint']:>15.1f}%")
    print(f"most frequent letter: {majority:.1f}%")
    print(json.dumps({"lm": args.lm, "questions": len(samples), "majority_letter": majority, **scores}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
