"""`vlbridge eval` end to end on a tiny model and a tiny Shapes export: every task writes its report, the
scores are the metric functions of the written predictions, and bad input is a clear error."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from vlbridge.bridges import registry
from vlbridge.bridges.connectors.mlp import MLPProjector
from vlbridge.build import build_model
from vlbridge.datasets.coco import coco_caption_references, read_karpathy_split
from vlbridge.datasets.results import read_caption_results, read_vqa_results
from vlbridge.datasets.scienceqa import read_scienceqa, scienceqa_ground_truth
from vlbridge.datasets.vqav2 import vqav2_ground_truth
from vlbridge.eval import retrieval
from vlbridge.eval.task_prompts import TASK_PROMPTS
from vlbridge.image_inputs import PixelImages
from vlbridge.metrics.caption import caption_scores
from vlbridge.metrics.multiple_choice import mc_accuracy, mc_scores
from vlbridge.metrics.retrieval import recall_at_k
from vlbridge.metrics.vqa import vqa_scores
from vlbridge.recipe import load_recipe
from vlbridge_cli.main import main

REPORT_KEYS = {"task", "prompt", "metric", "scores", "generation", "data", "model", "limit", "versions",
               "results_file", "predictions"}


def run_eval(*argv) -> int:
    return main(["eval", *map(str, argv)])


def read_report(path):
    report = json.loads(path.read_text())
    assert REPORT_KEYS <= set(report)
    return report


def test_caption_on_coco_annotations(shapes, run_dir, tmp_path):
    out = tmp_path / "caption.json"
    coco = shapes / "coco" / "captions_train.json"
    assert run_eval("--run", run_dir, "--task", "caption", "--coco", coco,
                    "--images", shapes / "images", "--max-new-tokens", 6, "--out", out) == 0
    report = read_report(out)
    assert report["task"] == "caption" and report["prompt"] == TASK_PROMPTS["caption"]
    assert report["generation"]["max_new_tokens"] == 6 and report["generation"]["do_sample"] is True
    assert report["data"] == {"coco": str(coco), "images": str(shapes / "images")}
    model = report["model"]
    assert model["run"] == str(run_dir) and model["checkpoint"] == str(run_dir / "final") and model["trained"]
    assert model["bridge"] == "llava" and model["identity"]["language_model"]["fingerprint"]
    # auto resolved as the suite pins it (tests/conftest.py), and said why
    assert model["precision"]["frozen"] == "fp32" and model["precision"]["requested"] == ["auto", "auto"]
    assert "VLBRIDGE_AUTO_PRECISION" in model["precision"]["why"]
    assert report["metric"]["name"] == "coco_caption" and report["versions"]["torch"]
    # the official result file holds the predictions, and the scores are the toolkit's on them
    predictions = read_caption_results(out.with_name(report["results_file"]))
    assert predictions == {item["image_id"]: item["prediction"] for item in report["predictions"]}
    assert any(predictions.values())  # the sampled tiny LM says something
    references, _ = coco_caption_references(coco)
    expected = caption_scores(references, predictions)
    assert {k: report["scores"][k] for k in expected["corpus"]} == expected["corpus"]


def test_caption_on_a_karpathy_split_with_limit(shapes, recipe_file, tmp_path):
    out = tmp_path / "karpathy.json"
    split_file = shapes / "coco" / "dataset_coco.json"
    assert run_eval("--recipe", recipe_file, "--task", "caption", "--karpathy", split_file, "--split", "train",
                    "--images", shapes, "--limit", 4, "--max-new-tokens", 5, "--out", out) == 0
    report = read_report(out)
    samples = read_karpathy_split(split_file, "train", image_root=shapes)[:4]
    assert report["limit"] == 4 and report["model"]["run"] is None and not report["model"]["trained"]
    assert report["model"]["recipe"] == str(recipe_file) and report["data"]["split"] == "train"
    predictions = read_caption_results(out.with_name(report["results_file"]))
    assert list(predictions) == [s.meta["image_id"] for s in samples]
    expected = caption_scores({s.meta["image_id"]: s.meta["answers"] for s in samples}, predictions)
    assert {k: report["scores"][k] for k in expected["corpus"]} == expected["corpus"]


def test_vqa_with_the_shapes_image_pattern(shapes, manifest, run_dir, tmp_path):
    files = manifest["files"]["vqav2"]
    questions, annotations = shapes / files["questions"]["train"], shapes / files["annotations"]["train"]
    out = tmp_path / "vqa.json"
    assert run_eval("--run", run_dir, "--task", "vqa", "--questions", questions, "--annotations", annotations,
                    "--images", shapes / "images", "--image-pattern", files["image_file_pattern"],
                    "--vqa-version", "2017", "--limit", 8, "--out", out) == 0
    report = read_report(out)
    assert report["metric"]["version"] == "2017" and report["generation"]["max_new_tokens"] == 10
    assert report["prompt"] == TASK_PROMPTS["vqa"] and report["data"]["image_pattern"] == files["image_file_pattern"]
    answers = read_vqa_results(out.with_name(report["results_file"]))
    assert len(answers) == 8 and answers == {i["question_id"]: i["prediction"] for i in report["predictions"]}
    truth = vqav2_ground_truth(questions, annotations)
    expected = vqa_scores(answers, {qid: truth[qid] for qid in answers}, version="2017").to_dict()
    for key in ("overall", "overall_unrounded", "per_answer_type", "per_question_type", "num_questions"):
        assert report["scores"][key] == expected[key]
    assert {str(i["question_id"]): i["accuracy"] for i in report["predictions"]} == expected["per_question"]


def test_multiple_choice_on_scienceqa_with_a_custom_prompt(shapes, run_dir, tmp_path):
    out = tmp_path / "mc.json"
    prompt = "{question}\nOptions: {options}\nAnswer:"
    assert run_eval("--run", run_dir, "--task", "multiple-choice", "--scienceqa", shapes / "scienceqa",
                    "--split", "train", "--limit", 6, "--prompt", prompt, "--out", out) == 0
    report = read_report(out)
    assert report["prompt"] == prompt and report["results_file"] is None
    assert report["metric"]["convention"] == "auto"
    truth = scienceqa_ground_truth(read_scienceqa(shapes / "scienceqa", "train")[:6])
    expected = mc_scores({i["id"]: i["prediction"] for i in report["predictions"]}, truth)
    assert report["scores"]["accuracy"] == expected["accuracy"]
    assert report["scores"]["unparsed"] == expected["unparsed"]


def test_multiple_choice_by_option_likelihood(shapes, run_dir, tmp_path, monkeypatch):
    from vlbridge.eval import choice_likelihood

    calls = []
    real = choice_likelihood.choose_by_likelihood

    def spy(model, collator, samples, reduce="sum", progress=None):
        chosen = real(model, collator, samples, reduce, progress)
        calls.append((samples, reduce, chosen))
        return chosen

    monkeypatch.setattr(choice_likelihood, "choose_by_likelihood", spy)
    out = tmp_path / "mc-likelihood.json"
    assert run_eval("--run", run_dir, "--task", "multiple-choice", "--scienceqa", shapes / "scienceqa",
                    "--split", "train", "--limit", 5, "--choose-by", "likelihood-mean", "--out", out) == 0
    report = read_report(out)
    assert report["metric"]["chosen_by"] == "likelihood-mean" and report["generation"] is None
    [(samples, reduce, chosen)] = calls
    assert reduce == "mean" and len(samples) == 5 and samples[0].prompt_turns[-1].text.endswith("Response:")
    truth = scienceqa_ground_truth(read_scienceqa(shapes / "scienceqa", "train")[:5])
    assert [i["choice"] for i in report["predictions"]] == chosen
    assert [i["prediction"] for i in report["predictions"]] == [s.meta["choices"][c] for s, c in zip(samples, chosen)]
    assert report["scores"]["accuracy"] == mc_accuracy(dict(zip(truth, chosen)), truth)["accuracy"]
    # a LLaVA JSON file: its mc samples by likelihood too, reported beside the generation report
    assert run_eval("--run", run_dir, "--data", shapes / "train_mc.json", "--limit", 3,
                    "--choose-by", "likelihood") == 0
    report = read_report(run_dir / "eval-train_mc-likelihood.json")
    samples, reduce, chosen = calls[-1]
    assert reduce == "sum" and report["scores"]["mc"]["count"] == 3
    assert [i["prediction"] for i in report["predictions"]] == [s.meta["choices"][c] for s, c in zip(samples, chosen)]
    expected = 100 * sum(c == s.meta["answer_index"] for s, c in zip(samples, chosen)) / 3
    assert report["scores"]["mc"]["accuracy"] == pytest.approx(expected)


def test_llava_json_path_still_works_with_its_default_report(shapes, run_dir):
    assert run_eval("--run", run_dir, "--data", shapes / "train_short.json", "--limit", 5) == 0
    report = read_report(run_dir / "eval-train_short.json")
    assert report["task"] == "data" and report["data"]["data"] == str(shapes / "train_short.json")
    assert report["scores"]["short"]["count"] == 5 and len(report["predictions"]) == 5
    assert report["generation"]["max_new_tokens"] == 10  # the recipe's eval.max_new_tokens


# --- retrieval: a connector whose module can embed images and texts ---------------------------------

@dataclass(frozen=True)
class ProbeOptions:
    dim: int = 16  # embedding width


class ProbeEmbedder(nn.Module):
    """Fixed random projections (seeded, so every build is the same): mean grid feature -> E, mean word
    vector -> E, both normalised."""

    def __init__(self, vision_dim: int, vocab: int, dim: int):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.image_projection = nn.Parameter(torch.randn(vision_dim, dim, generator=g))
        self.words = nn.Parameter(torch.randn(vocab, dim, generator=g))

    def embed_images(self, features):  # (N, n, d_v) -> (N, E)
        return nn.functional.normalize(features.mean(1) @ self.image_projection, dim=-1)

    def embed_texts(self, text_ids, text_mask):  # (M, L) -> (M, E)
        mask = text_mask[..., None].float()
        return nn.functional.normalize((self.words[text_ids] * mask).sum(1) / mask.sum(1), dim=-1)


def build_probe(input_width, output_width, options: ProbeOptions, vocab: int):
    connector = MLPProjector(input_width, output_width)
    connector.retrieval = ProbeEmbedder(input_width, vocab, options.dim)
    return connector


@pytest.fixture
def probe_bridge(monkeypatch, tiny_llama_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    monkeypatch.setitem(registry.CONNECTORS, "probe",
                        registry.ConnectorEntry(ProbeOptions, partial(build_probe, vocab=len(tokenizer)), "features"))
    monkeypatch.setitem(retrieval.TEXT_TOKENIZERS, "probe", lambda: tokenizer)
    return tokenizer


def test_retrieval_scores_come_from_the_bridges_embeddings(shapes, recipe_file, probe_bridge, tmp_path):
    out = tmp_path / "retrieval.json"
    split_file = shapes / "coco" / "dataset_coco.json"
    assert run_eval("--recipe", recipe_file, "--set", "model.connector=probe", "--task", "retrieval", "--karpathy",
                    split_file, "--split", "train", "--images", shapes, "--out", out) == 0
    report = read_report(out)
    assert report["generation"] is None and report["prompt"] is None
    assert report["model"]["spec"]["connector"] == "probe"
    assert report["metric"]["text_tokenizer"] == {"connector": "probe", "max_length": retrieval.MAX_TEXT_TOKENS}
    # recompute: the same embeddings, the metric function on their similarity matrix
    samples = read_karpathy_split(split_file, "train", image_root=shapes)
    built = build_model(load_recipe(recipe_file, ["model.connector=probe"]).model)
    encoder, embedder = built.model.vision_encoder, built.model.bridge.connector.retrieval
    texts = [t for s in samples for t in s.meta["answers"]]
    owners = [i for i, s in enumerate(samples) for _ in s.meta["answers"]]
    with torch.no_grad():
        grid = torch.cat([encoder(PixelImages(encoder.preprocess)(samples[i:i + 8]).pixel_values).grid
                          for i in range(0, len(samples), 8)])  # the recipe's eval.batch_size, as the CLI
        images = embedder.embed_images(grid)
        encoded = probe_bridge(texts, padding=True, truncation=True, max_length=35, return_tensors="pt")
        words = embedder.embed_texts(encoded["input_ids"], encoded["attention_mask"])
    expected = recall_at_k(images @ words.t(), owners)
    assert {k: report["scores"][k] for k in expected} == pytest.approx(expected)
    assert report["scores"]["num_images"] == len(samples) and report["scores"]["num_texts"] == len(texts) == 50
    ranks = [t["rank"] for t in report["predictions"]["texts"]]
    assert report["scores"]["t2i_R@5"] == pytest.approx(100 * sum(r <= 5 for r in ranks) / len(ranks))


def test_retrieval_with_a_bridge_that_cannot_embed_says_which_can(shapes, run_dir, capsys):
    code = run_eval("--run", run_dir, "--task", "retrieval", "--coco", shapes / "coco" / "captions_train.json",
                    "--images", shapes / "images")
    assert code == 2
    assert "bridge 'mlp -> input_space' cannot embed images and texts" in capsys.readouterr().err


# --- bad input: clear errors, before any model is built ----------------------------------------------------

@pytest.mark.parametrize("argv, message", [
    (["--task", "caption", "--coco", "{shapes}/coco/missing.json", "--images", "{shapes}/images"],
     "missing.json: file not found"),
    (["--task", "vqa", "--questions", "{shapes}/vqav2/v2_OpenEnded_shapes_train_questions.json",
      "--annotations", "{shapes}/vqav2/v2_shapes_val_annotations.json", "--images", "{shapes}/images"],
     "questions and annotations disagree: 40 question ids without annotation"),
    (["--task", "caption", "--coco", "{shapes}/coco/captions_train.json", "--questions", "q.json",
      "--images", "{shapes}/images"], "--questions is not read by --task caption"),
    (["--task", "vqa", "--questions", "q.json", "--images", "x"], "--task vqa needs --annotations"),
    (["--task", "caption", "--coco", "a.json", "--karpathy", "b.json", "--images", "x"],
     "needs exactly one of --coco ANNOTATIONS.json or --karpathy"),
    (["--task", "caption", "--coco", "a.json"], "--task caption needs --images"),
    (["--task", "vqa", "--questions", "q.json", "--annotations", "a.json", "--images", "x", "--prompt", "Answer:"],
     r"missing field(s) ['question']"),
    (["--task", "vqa", "--questions", "{shapes}/vqav2/v2_OpenEnded_shapes_train_questions.json",
      "--annotations", "{shapes}/vqav2/v2_shapes_train_annotations.json", "--images", "{shapes}/images",
      "--image-pattern", "shapes.png"], "must contain {image_id}"),
    (["--data", "{shapes}/train_short.json", "--split", "test"], "--split is not read by --data (no --task)"),
    (["--task", "multiple-choice", "--scienceqa", "{shapes}/scienceqa", "--split", "dev"], "unknown split 'dev'"),
    (["--task", "multiple-choice", "--scienceqa", "{shapes}/scienceqa", "--choose-by", "likelihood",
      "--answer-convention", "letter"], "--answer-convention is not read with --choose-by likelihood"),
    (["--task", "vqa", "--questions", "q.json", "--annotations", "a.json", "--images", "x", "--choose-by",
      "likelihood"], "--choose-by is not read by --task vqa"),
])
def test_bad_input_is_a_clear_error(argv, message, shapes, recipe_file, capsys):
    argv = [a.format(shapes=shapes) if "{shapes}" in a else a for a in argv]
    assert run_eval("--recipe", recipe_file, *argv) == 2
    assert message in capsys.readouterr().err


def test_missing_image_files_are_found_before_generation(shapes, manifest, recipe_file, capsys):
    files = manifest["files"]["vqav2"]
    code = run_eval("--recipe", recipe_file, "--task", "vqa", "--questions", shapes / files["questions"]["train"],
                    "--annotations", shapes / files["annotations"]["train"], "--images", shapes / "images")
    assert code == 2
    assert "COCO_val2014_000000000000.jpg not found (40 of 40 items' images are missing)" in capsys.readouterr().err


def test_cli_task_names_are_the_registrys():
    from vlbridge.eval.tasks import TASKS
    from vlbridge_cli import evaluate

    assert sorted(evaluate.TASK_NAMES) == sorted(TASKS) == sorted(k for k in evaluate.TASK_OPTIONS if k)
