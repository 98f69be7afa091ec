"""The report's three scores of a trained bridge on the Shapes test split, each a mean with its standard error:

- short answers: greedy answers, exact match after the VQA answer normalisation (:mod:`vlbridge.eval.scoring`),
  with the breakdown by question and answer type (:mod:`vlbridge.eval.by_type`);
- multiple choice by likelihood: the option whose text the model finds most likely
  (:mod:`vlbridge.eval.choice_likelihood`; a 135M LM does not map answers to letters reliably);
- captions: greedy captions scored by CIDEr-D against the five references (:mod:`vlbridge.metrics.caption`), x 100
  as papers print it; the score is the mean of the per-image scores, so its standard error is over images.
  CIDEr-D depends on the whole image set scored (document frequencies): every bridge is scored on the same set.

Standard errors are sample standard deviation / sqrt(n) over the items (:func:`vlbridge.eval.by_type.mean_and_stderr`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vlbridge.bridges.qformer.objective import references
from vlbridge.data.sample import Sample
from vlbridge.eval.by_type import by_task, mean_and_stderr
from vlbridge.eval.choice_likelihood import choose_by_likelihood
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.eval.scoring import majority_baseline, question_type_baseline, score_sample
from vlbridge.metrics.caption import caption_scores
from vlbridge.runs import prompt_collator

METRICS = {  # key -> (what it is, its scale)
    "short_exact_match": ("short answers, exact match", "%"),
    "mc_likelihood": ("multiple choice by likelihood", "%"),
    "caption_cider_d": ("captions, CIDEr-D x 100", ""),
}


@dataclass(frozen=True)
class EvalSets:
    """The test items every bridge is scored on."""

    short: list[Sample]
    mc: list[Sample]  # the option-text layout (test_mc-text.json): answers are the options' texts
    captions: list[Sample]
    train_short: list[Sample]  # for the image-blind baselines

    @classmethod
    def read(cls, data: Path, limit: int = 0) -> "EvalSets":
        """The Shapes export ``data``'s test files, the first ``limit`` items of each (0 = all)."""
        from vlbridge.data.llava_json import read_llava_json

        def read(name: str, first: int = 0) -> list[Sample]:
            items = list(read_llava_json(data / name, image_root=data))
            return items[:first] if first else items

        return cls(read("test_short.json", limit), read("test_mc-text.json", limit), read("test_caption.json", limit),
                   read("train_short.json"))

    def baselines(self) -> dict:
        """What no image gives: the majority answer and the question-type prior (short answers), chance (mc)."""
        chance = [100 / len(s.meta["choices"]) for s in self.mc]
        return {"short_majority": majority_baseline(self.train_short, self.short),
                "short_question_type_prior": question_type_baseline(self.train_short, self.short),
                "mc_chance": sum(chance) / len(chance) if chance else None}

    def sizes(self) -> dict:
        return {"short": len(self.short), "mc": len(self.mc), "captions": len(self.captions)}


def summary(values: list[float]) -> dict:
    mean, error = mean_and_stderr(values)
    return {"mean": mean, "stderr": error, "count": len(values)}


def greedy(built, recipe, images, samples: list[Sample], tokens: int, batch_size: int) -> list[str]:
    collator = prompt_collator(built, recipe, images)
    return generate_answers(built.model, built.tokenizer, collator, samples, GenerationSettings(tokens, batch_size))


def short_answers(built, recipe, images, samples: list[Sample], tokens: int, batch_size: int) -> dict:
    predictions = greedy(built, recipe, images, samples, tokens, batch_size)
    correct = [100 * score_sample(s, p)["exact_match"] for s, p in zip(samples, predictions)]
    return {**summary(correct), "by_type": by_task(samples, predictions).get("short", {}),
            "examples": [{"question": s.prompt_turns[-1].text.replace("<image>", "").strip(), "answer": s.answer,
                          "prediction": p} for s, p in list(zip(samples, predictions))[:4]]}


def multiple_choice(built, recipe, images, samples: list[Sample]) -> dict:
    collator = prompt_collator(built, recipe, images, with_answer=True)
    chosen = choose_by_likelihood(built.model, collator, samples)
    return summary([100.0 * (c == s.meta["answer_index"]) for s, c in zip(samples, chosen)])


def captions(built, recipe, images, samples: list[Sample], tokens: int, batch_size: int) -> dict:
    predictions = greedy(built, recipe, images, samples, tokens, batch_size)
    scores = caption_scores({s.id: references(s) for s in samples}, {s.id: p for s, p in zip(samples, predictions)})
    return {**summary([100 * v["CIDEr"] for v in scores["per_image"].values()]),
            "examples": [{"reference": references(s)[0], "prediction": p}
                         for s, p in list(zip(samples, predictions))[:2]]}


def measure_accuracy(built, recipe, images, sets: EvalSets, short_tokens: int, caption_tokens: int) -> dict:
    """The three scores, keyed as :data:`METRICS`."""
    batch = recipe.eval.batch_size
    return {"short_exact_match": short_answers(built, recipe, images, sets.short, short_tokens, batch),
            "mc_likelihood": multiple_choice(built, recipe, images, sets.mc),
            "caption_cider_d": captions(built, recipe, images, sets.captions, caption_tokens, batch)}
