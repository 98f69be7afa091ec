"""Runs in bf16 through the trainer: the start-of-run report and the checkpoints say which precision was used, a run
trained in one precision loads and answers in the other, the feature cache keeps bf16 and fp32 features apart, and
the objectives with their own inputs (EVE's aligner and teacher, BLIP-2's stage 1) train in bf16."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from vlbridge.data.llava_json import read_llava_json
from vlbridge.encoders import build_vision_encoder
from vlbridge.encoders.feature_cache import FeatureCache
from vlbridge.runs import load_run, prompt_collator
from vlbridge.train.parameter_groups import group_of
from vlbridge.train.trainer import train

QUIET = {"log": lambda *_: None}
BF16 = ("model.precision=bf16", "train.precision=bf16")


def lm_dtypes(model) -> set[torch.dtype]:
    return {p.dtype for n, p in model.named_parameters() if group_of(n) == "lm"}


def test_the_report_and_every_checkpoint_record_the_precision(make_recipe, tmp_path):
    lines = []
    train(make_recipe("model.bridge=memvp", "model.bridge_options={num_slots: 20}", *BF16, "train.save_every=2"),
          log=lines.append)
    report_line = next(line for text in lines for line in str(text).splitlines() if line.startswith("precision:"))
    assert report_line.startswith("precision: frozen weights and their activations bf16, trained parts' products "
                                  "bf16 (autocast)")
    expected = {"frozen": "bf16", "compute": "bf16", "requested": ["bf16", "bf16"], "why": ""}
    run = tmp_path / "run"
    assert json.loads((run / "report.json").read_text())["precision"] == expected
    for checkpoint in ("checkpoint-2", "final"):
        assert json.loads((run / checkpoint / "meta.json").read_text())["precision"] == expected


def test_auto_is_resolved_and_recorded(make_recipe, tmp_path, monkeypatch):
    monkeypatch.setenv("VLBRIDGE_AUTO_PRECISION", "bf16")
    result = train(make_recipe(), **QUIET)
    assert lm_dtypes(result["built"].model) == {torch.bfloat16}
    meta = json.loads((tmp_path / "run" / "final" / "meta.json").read_text())
    assert meta["precision"] == {"frozen": "bf16", "compute": "bf16", "requested": ["auto", "auto"],
                                 "why": "VLBRIDGE_AUTO_PRECISION=bf16"}


@pytest.mark.parametrize("trained, loaded", [("bf16", "fp32"), ("fp32", "bf16")])
def test_a_run_trained_in_one_precision_loads_and_answers_in_the_other(make_recipe, tmp_path, trained, loaded):
    """Trained tensors are fp32 whatever the precision, and the identity fingerprints the weights as loaded."""
    result = train(make_recipe("model.lora_rank=2", f"model.precision={trained}", f"train.precision={trained}"),
                   **QUIET)
    run = tmp_path / "run"
    built, recipe = load_run(run, [f"model.precision={loaded}"])
    model = built.model
    assert lm_dtypes(model) == {getattr(torch, {"bf16": "bfloat16", "fp32": "float32"}[loaded])}
    assert {p.dtype for n, p in model.named_parameters() if group_of(n) in ("bridge", "lora")} == {torch.float32}
    expected = result["built"].model.trainable_state_dict()
    assert all(torch.equal(p, expected[n]) for n, p in model.trainable_state_dict().items())
    model.eval()
    samples = list(read_llava_json(recipe.data.val, image_root=recipe.data.image_root))[:2]
    batch = prompt_collator(built, with_answer=True)(samples)
    trained_model = result["built"].model.eval()
    with torch.no_grad():
        here, there = model(batch), trained_model(batch)
    # the same trained tensors on the same pretrained weights, run in the other precision: close, not equal
    torch.testing.assert_close(here.loss_sum, there.loss_sum, rtol=2e-2, atol=0)
    generated = model.generate(prompt_collator(built)(samples), max_new_tokens=2)
    assert generated.shape[0] == 2


def test_the_feature_cache_keeps_bf16_and_fp32_features_apart(tmp_path, tiny_dinov2_dir):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.new("RGB", (56, 56), (200, 30, 30)).save(image)
    fp32 = build_vision_encoder(str(tiny_dinov2_dir), layer=-1)
    bf16 = build_vision_encoder(str(tiny_dinov2_dir), layer=-1)
    bf16.model.to(torch.bfloat16)  # as vlbridge.precision.store_frozen leaves a frozen encoder
    assert bf16.dtype == torch.bfloat16
    caches = {name: FeatureCache.for_encoder(tmp_path / "cache", encoder) for name, encoder in
              (("fp32", fp32), ("bf16", bf16))}
    assert caches["fp32"].folder != caches["bf16"].folder  # never one's features read as the other's
    assert caches["bf16"].identity == f"{fp32.identity}|computed in torch.bfloat16"
    assert caches["fp32"].identity == fp32.identity  # fp32 caches made before the setting existed stay valid
    for name, encoder in (("fp32", fp32), ("bf16", bf16)):
        computed = caches[name].get_or_compute([image], lambda paths, e=encoder: e(e.preprocess(
            [Image.open(p).convert("RGB") for p in paths])))
        entry = next(caches[name].folder.rglob("*.safetensors"))
        with safe_open(str(entry), framework="pt") as handle:
            assert handle.get_tensor("grid").dtype == encoder.dtype  # stored as computed: bf16 takes half the disk
        direct = encoder(encoder.preprocess([Image.open(image).convert("RGB")])).grid
        torch.testing.assert_close(computed.grid, direct.float(), rtol=0, atol=0)


def test_eve_with_its_aligner_and_teacher_trains_in_bf16(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir,
                                                         monkeypatch):
    from vlbridge.recipe import load_recipe

    monkeypatch.setenv("VLBRIDGE_CACHE", str(tmp_path / "cache"))
    recipe = load_recipe(None, [
        f"model.language_model={tiny_llama_dir}", "model.vision_encoder=none", "model.bridge=null",
        "model.connector=eve_patch",
        "model.connector_options={image_size: 56, patch: 14, pool: 2, width: 16, heads: 2}",
        "model.injection=input_space", f"model.teacher_encoder={tiny_dinov2_dir}", "model.teacher_layer=-1",
        "model.aligner=pal", "model.aligner_options={every: 1, heads: 2}", *BF16,
        f"data.train={shapes_dir / 'train_caption.json'}", f"data.val={shapes_dir / 'val_caption.json'}",
        f"data.image_root={shapes_dir}", "train.steps=3", "train.batch_size=2", "train.eval_samples=2",
        "train.eval_every=0", "train.lr=1e-3", f"train.output_dir={tmp_path / 'run'}", "eval.max_new_tokens=2"])
    result = train(recipe, **QUIET)
    model = result["built"].model
    assert model.teacher.dtype == torch.bfloat16 and lm_dtypes(model) == {torch.bfloat16}
    history = result["history"]
    assert all(torch.isfinite(torch.tensor([h["loss"], h["alignment"]])).all() for h in history)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if group_of(n) == "aligner")


def test_blip2_stage1_trains_in_bf16(tmp_path, shapes_dir, tiny_llama_dir, tiny_dinov2_dir):
    from vlbridge.recipe import load_recipe

    qformer = ("init: random, num_query_tokens: 4, embed_dim: 16, "
               "sizes: {hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 64}")
    recipe = load_recipe(None, [
        f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}", "model.vision_layer=-1",
        "model.bridge=blip2", f"model.bridge_options={{{qformer}, stage1: true}}", "train.objective=blip2_stage1",
        f"data.train={shapes_dir / 'train_caption.json'}", f"data.val={shapes_dir / 'val_caption.json'}",
        f"data.image_root={shapes_dir}", "data.cache_features=false", *BF16, "train.steps=3", "train.batch_size=4",
        "train.eval_every=0", "train.eval_samples=0", f"train.output_dir={tmp_path / 'run'}"])
    result = train(recipe, **QUIET)
    assert result["built"].model.vision_encoder.dtype == torch.bfloat16
    assert all(torch.isfinite(torch.tensor([h["loss"], h["itc"], h["itm"], h["itg"]])).all()
               for h in result["history"])


def test_a_bf16_run_exports_its_weights_as_loaded(make_recipe, tmp_path):
    """`vlbridge export --format hf` writes the LM and encoder as loaded (fp32), not as a bf16 run stores them."""
    from safetensors.torch import load_file as read

    from vlbridge.export.run import export_run

    train(make_recipe("model.lora_rank=2", *BF16), **QUIET)
    exported = export_run(tmp_path / "run", tmp_path / "hf")
    assert exported.hf_class == "LlavaForConditionalGeneration"
    tensors = {}
    for path in (tmp_path / "hf").glob("*.safetensors"):
        tensors |= read(path)
    assert tensors and {t.dtype for t in tensors.values()} == {torch.float32}
    fp32, _ = load_run(tmp_path / "run", ["model.precision=fp32"])
    vision = {n: p for n, p in fp32.model.vision_encoder.model.named_parameters()}
    name = next(iter(vision))
    saved = [t for key, t in tensors.items() if key.endswith(f"vision_tower.{name}")]
    assert len(saved) == 1 and torch.equal(saved[0], vision[name])


@pytest.mark.parametrize("kind", ["t5", "flan-t5", "bart"])
def test_memvp_on_an_encoder_decoder_lm_trains_and_answers_in_bf16(make_recipe, tiny_seq2seq_dirs, shapes_dir, kind):
    """T5 keeps its FFN output projection `wo` in fp32, as Hugging Face does for it; the rest of the LM is bf16."""
    result = train(make_recipe(f"model.language_model={tiny_seq2seq_dirs[kind]}", "model.bridge=memvp",
                               "model.bridge_options={projector_layers: 1, num_slots: 20}", *BF16), **QUIET)
    model = result["built"].model
    dtypes = {n: p.dtype for n, p in model.named_parameters() if group_of(n) == "lm"}
    kept = {n for n in dtypes if ".wo." in n}
    assert bool(kept) == kind.endswith("t5") and all(dtypes[n] == torch.float32 for n in kept)
    assert {d for n, d in dtypes.items() if n not in kept} == {torch.bfloat16}
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result["history"])
    samples = list(read_llava_json(shapes_dir / "val_short.json", image_root=shapes_dir))[:3]
    model.eval()
    answers = model.generate(prompt_collator(result["built"])(samples), max_new_tokens=3)
    assert answers.shape[0] == 3


def test_memvp_on_gpt2_trains_in_bf16_with_the_training_attention(make_recipe, tiny_gpt2_dir):
    """GPT-2's non-gated FFN gets the literal concatenation, and its attention the bf16 training attention."""
    from vlbridge.cpu_bf16_attention import NAME

    result = train(make_recipe(f"model.language_model={tiny_gpt2_dir}", "model.bridge=memvp", *BF16), **QUIET)
    model = result["built"].model
    assert model.language_model.model.config._attn_implementation == NAME
    assert lm_dtypes(model) == {torch.bfloat16}
    losses = [h["loss"] for h in result["history"]]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
