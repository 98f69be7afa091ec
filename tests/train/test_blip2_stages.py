"""BLIP-2's two stages through the one trainer: stage 1 (ITC + ITM + ITG, ``train.objective=blip2_stage1``) trains,
checkpoints its heads and resumes exactly; stage 2 starts from its Q-Former (``model.init_from``); retrieval
evaluation runs on a stage-1 run."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from vlbridge.data.sample import Sample, Turn
from vlbridge.errors import ConfigError, DataError
from vlbridge.build import build_model
from vlbridge.runs import load_run
from vlbridge.train.checkpoint import initialise_from
from vlbridge.bridges.qformer.objective import STAGE1_MAX_TEXT_TOKENS, CaptionCollator
from vlbridge.train.objectives import get_objective
from vlbridge.recipe import load_recipe
from vlbridge.train.trainer import train
from vlbridge_cli.main import main

TINY_QFORMER = ("init: random, num_query_tokens: 4, embed_dim: 16, "
                "sizes: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}")
STAGE1_HEADS = ("bridge.connector.stage1.temp", "bridge.connector.stage1.vision_projection.weight", "bridge.connector.stage1.text_projection.weight",
                "bridge.connector.stage1.itm_head.weight", "bridge.connector.stage1.lm_head.bias",
                "bridge.connector.stage1.lm_head.transform.dense.weight")
QUIET = dict(log=lambda *_: None)


@pytest.fixture(scope="module")
def captions(tmp_path_factory):
    """20 Shapes scenes at 56 px (16 train, 2 val, 2 test) as LLaVA caption JSON and COCO captions."""
    from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
    from vlbridge.data.shapes_export import export_shapes

    folder = tmp_path_factory.mktemp("shapes_captions")
    export_shapes(generate_shapes(ShapesConfig(n=20, seed=1, image_size=56)), folder, ["llava", "coco"])
    return folder


@pytest.fixture(scope="module")
def recipe(captions, tiny_llama_dir, tiny_dinov2_dir):
    """``recipe(output_dir, stage, *overrides)``: a tiny BLIP-2 stage-1 or stage-2 recipe on the captions."""

    def make(out, stage: int = 1, *extra):
        stage_keys = (["train.objective=blip2_stage1", f"model.bridge_options={{{TINY_QFORMER}, stage1: true}}"]
                      if stage == 1 else [f"model.bridge_options={{{TINY_QFORMER}}}"])
        return load_recipe(None, [
            f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}",
            "model.vision_layer=-1", "model.bridge=blip2", f"data.train={captions / 'train_caption.json'}",
            f"data.val={captions / 'val_caption.json'}", f"data.image_root={captions}", "data.cache_features=false",
            "train.steps=12", "train.batch_size=4", "train.lr=2e-3", "train.warmup_steps=1", "train.eval_every=0",
            "train.eval_samples=0", "train.threads=1", f"train.output_dir={out}", "eval.max_new_tokens=2",
            *stage_keys, *extra])

    return make


@pytest.fixture(scope="module")
def stage1_run(tmp_path_factory, recipe):
    threads = torch.get_num_threads()
    out = tmp_path_factory.mktemp("blip2") / "stage1"
    try:
        result = train(recipe(out), **QUIET)
    finally:
        torch.set_num_threads(threads)
    return out, result


def metric_lines(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_stage1_trains_through_the_trainer_and_its_checkpoint_holds_the_heads(stage1_run):
    run, result = stage1_run
    history = result["history"]
    losses = torch.tensor([h["loss"] for h in history])
    assert len(history) == 12 and torch.isfinite(losses).all()
    assert losses[-3:].mean() < losses[:3].mean()  # ITC + ITM + ITG goes down
    for h in history:  # the logged terms add up to the loss (equal weights)
        assert h["loss"] == pytest.approx(h["itc"] + h["itm"] + h["itg"], rel=1e-5)
    saved = load_file(run / "final" / "trained.safetensors")
    assert all(name in saved for name in STAGE1_HEADS)
    # the Q-Former's text side with [DEC] (ITC text encoder, ITM, ITG) and its query side, shared with the connector
    assert saved["bridge.connector.qformer.embeddings.word_embeddings.weight"].shape == (30523, 32)
    assert "bridge.connector.qformer.query_tokens" in saved and "bridge.connector.ln_vision.weight" in saved
    # stage 1 never reads the language projection: frozen, not saved
    assert not any("language_projection" in name for name in saved)
    counts = result["parameter_counts"]["bridge"]
    assert counts["total"] - counts["trainable"] == 32 * 64 + 64  # Linear(32 -> 64) of the tiny LM's width
    # validation is retrieval; one prediction (rank, top texts) per validation image
    final = [line for line in metric_lines(run) if "val_i2t_R@1" in line][-1]
    assert final["step"] == 12 and final["val_num_images"] == 2 and final["val_num_texts"] == 10
    predictions = json.loads((run / "predictions.json").read_text())
    assert len(predictions) == 2 and {"rank", "top_texts"} <= set(predictions[0]["prediction"])
    report = json.loads((run / "report.json").read_text())
    assert report["objective"] == "blip2_stage1" and report["forward_flops_per_sample"]["language_model"] == 0
    assert report["train_flops_per_step"] > 0 and report["activation_bytes_per_micro_batch"] > 0
    reloaded, _ = load_run(run)
    expected = result["built"].model.trainable_state_dict()
    assert set(reloaded.model.trainable_state_dict()) == set(expected)
    assert all(torch.equal(t, expected[k]) for k, t in reloaded.model.trainable_state_dict().items())


def test_stage1_resumes_exactly(tmp_path, recipe):
    """Dropout, hard-negative sampling and the caption drawn per sample all follow the restored generators."""
    run = tmp_path / "run"
    stage1 = recipe(run, 1, "train.steps=4", "train.save_every=2")
    reference = train(stage1, **QUIET)
    shutil.rmtree(run / "final")  # as if it had stopped after its checkpoint at step 2
    resumed = train(stage1, resume=run, **QUIET)
    keys = ("loss", "itc", "itm", "itg", "grad_norm")
    assert [[h[k] for k in keys] for h in resumed["history"]] == [[h[k] for k in keys] for h in reference["history"]]
    expected = reference["built"].model.trainable_state_dict()
    got = resumed["built"].model.trainable_state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in got)
    assert any(k.startswith("bridge.connector.stage1.") for k in load_file(run / "checkpoint-2" / "trained.safetensors"))


def test_stage2_init_from_loads_exactly_the_stage1_qformer(tmp_path, recipe, stage1_run):
    stage1, _ = stage1_run
    stage1_tensors = load_file(stage1 / "final" / "trained.safetensors")
    out = tmp_path / "stage2"
    # lr 0: the saved stage-2 tensors are the ones it started from
    result = train(recipe(out, 2, f"model.init_from={stage1}", "train.steps=1", "train.lr=0", "train.eval_samples=1"),
                   **QUIET)
    saved = load_file(out / "final" / "trained.safetensors")
    qformer = {k for k in saved if k.startswith(("bridge.connector.qformer.", "bridge.connector.ln_vision."))}
    report = json.loads((out / "report.json").read_text())["init_from"]
    assert qformer and set(report["loaded"]) == qformer
    assert all(torch.equal(saved[k], stage1_tensors[k]) for k in qformer)
    assert report["not_in_checkpoint"] == ["bridge.connector.language_projection.bias",
                                           "bridge.connector.language_projection.weight"]
    # stage 2 reads queries only: the stage-1 heads and the Q-Former's text side stay behind
    assert set(report["not_in_model"]) == set(stage1_tensors) - qformer
    assert all(name in report["not_in_model"] for name in STAGE1_HEADS)
    assert "bridge.connector.qformer.embeddings.word_embeddings.weight" in report["not_in_model"]
    assert result["history"][0]["loss"] > 0

    eight_queries = TINY_QFORMER.replace("num_query_tokens: 4", "num_query_tokens: 8")
    other = recipe(out, 2, f"model.bridge_options={{{eight_queries}}}")
    with pytest.raises(ConfigError, match=r"differ in shape .*query_tokens \(1, 4, 32\) vs \(1, 8, 32\)"):
        initialise_from(build_model(other.model).model, stage1, **QUIET)


def test_retrieval_eval_runs_on_a_stage1_run(tmp_path, captions, stage1_run, capsys):
    run, _ = stage1_run
    out = tmp_path / "retrieval.json"
    assert main(["eval", "--run", str(run), "--task", "retrieval", "--coco",
                 str(captions / "coco" / "captions_val.json"), "--images", str(captions / "images"),
                 "--out", str(out)]) == 0
    scores = json.loads(out.read_text())["scores"]
    assert scores["num_images"] == 2 and scores["num_texts"] == 10
    # the same images and captions as the run's own validation (LLaVA caption JSON): the same recalls
    final = [line for line in metric_lines(run) if "val_i2t_R@1" in line][-1]
    for key in ("i2t_R@1", "i2t_R@5", "t2i_R@1", "t2i_R@5"):
        assert scores[key] == final[f"val_{key}"], key


def sample(meta, image="x.png", answer="A red circle."):
    return Sample(id="s1", turns=(Turn("user", "<image>\nDescribe."), Turn("assistant", answer)), image=image,
                  source="data.json", meta=meta)


def test_caption_collator_reads_references_cls_first_and_at_most_32_tokens():
    from vlbridge.bridges.qformer.bridge import qformer_tokenizer
    from vlbridge.batch import ImageInputs

    tokenizer, _ = qformer_tokenizer()
    long = " ".join(["a small blue square at the top left"] * 10)
    references = ["A red circle.", "One red round shape.", long]
    collator = CaptionCollator(tokenizer, lambda samples: ImageInputs(grid=torch.zeros(len(samples), 1, 1)))
    torch.manual_seed(0)
    drawn = [collator.caption(sample({"task": "caption", "answers": references})) for _ in range(60)]
    assert set(drawn) == set(references)  # every reference caption is a training text
    batch = collator([sample({"answers": [long]})])
    assert batch.text_ids.shape == (1, STAGE1_MAX_TEXT_TOKENS) and batch.text_ids[0, 0] == tokenizer.cls_token_id
    assert batch.num_supervised == 1 and bool(batch.has_image.all())
    evaluation = CaptionCollator(tokenizer, collator.load_images, draw=False)
    assert evaluation.caption(sample({"answers": references}, answer="A red circle.")) == "A red circle."
    with pytest.raises(DataError, match=r"data.json.*s1.*meta.task"):
        collator([sample({"task": "short", "answers": ["red"]})])
    with pytest.raises(DataError, match=r"s1.*image"):
        collator([sample({"answers": references}, image=None)])


def test_stage1_objective_needs_the_stage1_model_and_unknown_objectives_are_refused(tmp_path, recipe):
    with pytest.raises(ConfigError, match=r"bridge_options.stage1=true"):
        train(recipe(tmp_path / "a", 2, "train.objective=blip2_stage1", "train.steps=1"), **QUIET)
    with pytest.raises(ConfigError, match=r"unknown train.objective 'itc'; valid: \['blip2_stage1', 'lm'\]"):
        get_objective("itc")
