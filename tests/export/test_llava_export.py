"""`vlbridge export --format hf` of mlp -> input_space runs: a LlavaForConditionalGeneration folder and processor that
Hugging Face loads and that computes what vlbridge computes, on tiny random models."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.runs import load_run, prompt_collator
from vlbridge_cli.main import main

PROMPTS = ["What color is it?", "Describe the image."]


def hf_llava(folder):
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder).eval(), AutoProcessor.from_pretrained(folder)


def hf_inputs(processor, image_path, prompt):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True)
    return processor(text=text, images=Image.open(image_path), return_tensors="pt")


def hf_answer(model, processor, image_path, prompt, max_new_tokens):
    inputs = hf_inputs(processor, image_path, prompt)
    out = model.generate(**inputs, max_new_tokens=max_new_tokens)
    return processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def our_logits(built, image_path, prompt):
    """The LM's logits over the spliced sequence vlbridge builds for one prompt (the input-space injection's)."""
    sample = Sample("s", (Turn("user", f"{IMAGE_PLACEHOLDER}\n{prompt}"),), image=image_path)
    batch = prompt_collator(built)([sample])
    model = built.model.eval()  # no LoRA dropout
    with torch.no_grad(), model.bridge.injection.inject(model.language_model, batch.input_ids, batch.attention_mask,
                                                        model.visual_vectors(batch), batch.has_image, None,
                                                        "left") as inputs:
        return model.language_model.model(inputs_embeds=inputs.inputs_embeds,
                                          attention_mask=inputs.attention_mask).logits


def export(run, out, *extra):
    assert main(["export", "--run", str(run), "--out", str(out), *extra]) == 0


def test_exported_llava_answers_as_vlbridge_generate(make_run, varied_llama_dir, tiny_dinov2_dir, photos, tmp_path,
                                                     capsys):
    run, _ = make_run(varied_llama_dir, tiny_dinov2_dir)
    out = tmp_path / "hf"
    export(run, out)
    assert "LlavaForConditionalGeneration" in capsys.readouterr().out
    card = (out / "README.md").read_text()
    assert "library_name: transformers" in card and "LlavaForConditionalGeneration.from_pretrained(" in card
    model, processor = hf_llava(out)
    answers = set()
    for i, image in enumerate(photos):
        prompt = PROMPTS[i % len(PROMPTS)]
        assert main(["generate", "--run", str(run), "--image", str(image), "--prompt", prompt,
                     "--max-new-tokens", "12"]) == 0
        ours = capsys.readouterr().out.strip()
        assert hf_answer(model, processor, image, prompt, 12) == ours
        answers.add(ours)
    assert len(answers) > 1  # the answers depend on image and prompt: the comparison can fail


def test_exported_llava_logits_equal_ours_and_the_prompt_is_vlbridge_s(make_run, tiny_llama_dir, tiny_dinov2_dir,
                                                                       photos, tmp_path):
    run, _ = make_run(tiny_llama_dir, tiny_dinov2_dir)
    out = tmp_path / "hf"
    export(run, out)
    model, processor = hf_llava(out)
    built, _ = load_run(run)
    vocabulary = built.model.language_model.model.get_input_embeddings().weight.shape[0]
    config = json.loads((out / "config.json").read_text())
    assert config["vision_feature_layer"] == -1 and config["vision_feature_select_strategy"] == "default"
    assert config["image_seq_length"] == built.model.vision_encoder.num_tokens == 16
    for image in photos:
        inputs = hf_inputs(processor, image, PROMPTS[0])
        ours = our_logits(built, image, PROMPTS[0])
        with torch.no_grad():
            theirs = model(**inputs).logits
        assert theirs.shape[1] == ours.shape[1]  # the same sequence: 16 image tokens in place of the placeholder
        assert (theirs[..., :vocabulary] - ours).abs().max() < 1e-4
    # <image> was added to the vocabulary: its row exists for the embedding lookup and is never generated
    assert config["image_token_index"] == vocabulary
    assert json.loads((out / "generation_config.json").read_text())["suppress_tokens"] == [vocabulary]


def test_lora_is_merged_into_the_language_model(make_run, varied_llama_dir, tiny_dinov2_dir, photos, tmp_path, capsys):
    run, _ = make_run(varied_llama_dir, tiny_dinov2_dir, "model.lora_rank=4", scale=0.05)
    out = tmp_path / "hf"
    export(run, out)
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k]
    model, processor = hf_llava(out)
    built, _ = load_run(run)
    vocabulary = built.model.language_model.model.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        theirs = model(**hf_inputs(processor, photos[0], PROMPTS[0])).logits[..., :vocabulary]
    ours = our_logits(built, photos[0], PROMPTS[0])
    assert (theirs - ours).abs().max() < 1e-4 * ours.abs().max()
    # the LoRA matters: without it the LM computes something else, so only the merge makes the two equal
    with torch.no_grad():
        plain = model.model.language_model.layers[0].self_attn.q_proj.weight
        base = built.model.language_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
        assert (plain - base).abs().max() > 1e-3
    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--image", str(photos[1]), "--prompt", PROMPTS[1],
                 "--max-new-tokens", "8"]) == 0
    assert hf_answer(model, processor, photos[1], PROMPTS[1], 8) == capsys.readouterr().out.strip()


def test_a_plain_format_lm_with_its_own_embedding_names_exports_too(make_run, tiny_gpt2_dir, tiny_dinov2_dir, photos,
                                                                    tmp_path):
    """GPT-2: no chat template (vlbridge's plain layout), embeddings named wte (LLaVA cannot tie its head to them)."""
    run, _ = make_run(tiny_gpt2_dir, tiny_dinov2_dir, "model.bridge_options={activation: relu}")
    out = tmp_path / "hf"
    export(run, out)
    model, processor = hf_llava(out)
    built, _ = load_run(run)
    assert processor.apply_chat_template([{"role": "user", "content": "<image>\nhi"}]) == \
        built.chat_format.render([("user", "<image>\nhi")])
    vocabulary = built.model.language_model.model.get_input_embeddings().weight.shape[0]
    with torch.no_grad():
        theirs = model(**hf_inputs(processor, photos[2], PROMPTS[0])).logits[..., :vocabulary]
    assert (theirs - our_logits(built, photos[2], PROMPTS[0])).abs().max() < 1e-4


@pytest.fixture(scope="module")
def tiny_towers(tmp_path_factory):
    """2-layer SigLIP (no CLS token; 56 px resized without a crop) and CLIP (CLS; short side then a crop, OpenAI
    statistics) vision towers."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=14,
                 image_size=56)
    folders = {}
    for name, (config, model) in {"siglip": (SiglipVisionConfig, SiglipVisionModel),
                                  "clip": (CLIPVisionConfig, CLIPVisionModel)}.items():
        torch.manual_seed(0)
        folders[name] = tmp_path_factory.mktemp(f"tiny_{name}")
        model(config(**sizes)).save_pretrained(folders[name])
    return folders


@pytest.mark.parametrize("tower, strategy", [("siglip", "full"), ("clip", "default")])
def test_encoders_with_and_without_cls_map_to_their_strategy(make_run, tiny_llama_dir, tiny_towers, photos, tmp_path,
                                                             tower, strategy):
    run, _ = make_run(tiny_llama_dir, tiny_towers[tower])
    out = tmp_path / "hf"
    export(run, out)
    assert json.loads((out / "config.json").read_text())["vision_feature_select_strategy"] == strategy
    model, processor = hf_llava(out)
    built, _ = load_run(run)
    vocabulary = built.model.language_model.model.get_input_embeddings().weight.shape[0]
    with torch.no_grad():  # a 50 x 90 image: resized (and cropped for CLIP) as vlbridge's preprocessing does
        theirs = model(**hf_inputs(processor, photos[1], PROMPTS[0])).logits[..., :vocabulary]
    assert (theirs - our_logits(built, photos[1], PROMPTS[0])).abs().max() < 1e-4


def test_a_processor_that_tokenizes_otherwise_is_refused(make_run, tiny_llama_dir, tiny_dinov2_dir, tmp_path):
    """The export's self-check compares the processor's ids for a probe prompt with vlbridge's."""
    from vlbridge.errors import ConfigError
    from vlbridge.export.llava import check_prompt_tokens, exported_tokenizer, hf_processor, llava_layout

    run, _ = make_run(tiny_llama_dir, tiny_dinov2_dir)
    built, recipe = load_run(run)
    layout = llava_layout(built, recipe)
    processor = hf_processor(built, layout, exported_tokenizer(built.tokenizer, tmp_path))
    image = Image.new("RGB", (56, 56))
    check_prompt_tokens(built, processor, layout, image)  # as exported: the same ids
    processor.chat_template = processor.chat_template.replace("assistant", "assistant ")
    with pytest.raises(ConfigError, match="tokenizes the prompt 'What is in the image\\?' differently"):
        check_prompt_tokens(built, processor, layout, image)


@pytest.mark.parametrize("override, named", [
    ("model.bridge_options={pool: 2}", "model.bridge_options.pool=2"),
    ("model.bridge_options={features: pooled}", "model.bridge_options.features='pooled'"),
    ("model.bridge_options={layers: 1}", "model.bridge_options.layers=1"),
    ("model.bridge_options={hidden: 32}", "model.bridge_options.hidden=32"),
    ("model.vision_adapter_dim=4", "model.vision_adapter_dim=4"),
])
def test_options_llava_has_no_field_for_are_refused_by_name(make_run, tiny_llama_dir, tiny_dinov2_dir, tmp_path, capsys,
                                                            override, named):
    run, _ = make_run(tiny_llama_dir, tiny_dinov2_dir, override)
    out = tmp_path / "hf"
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert named in err and "LlavaForConditionalGeneration" in err and "--format bridge" in err
    assert not out.exists() and not list(tmp_path.glob(".hf.*"))  # nothing half-written is left


def test_an_encoder_with_registers_is_refused(make_run, tiny_llama_dir, tmp_path, capsys):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    encoder = tmp_path / "registers"
    Dinov2WithRegistersModel(Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                       intermediate_size=64, patch_size=14, image_size=56,
                                                       num_register_tokens=4)).save_pretrained(encoder)
    run, _ = make_run(tiny_llama_dir, encoder)
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "hf")]) == 2
    assert "has 5 prefix tokens" in capsys.readouterr().err


def test_an_existing_folder_is_kept_unless_overwrite(make_run, tiny_llama_dir, tiny_dinov2_dir, tmp_path, capsys):
    run, _ = make_run(tiny_llama_dir, tiny_dinov2_dir)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["export", "--run", str(run), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "mine.txt").is_file()
    export(run, out, "--overwrite")
    assert not (out / "mine.txt").exists() and (out / "config.json").is_file()
