"""The trainer on an encoder-decoder LM: a tiny T5 loaded from its folder, MemVP in its FFNs, Shapes data."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from vlbridge.cost import sample_flops
from vlbridge.data.llava_json import read_llava_json
from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
from vlbridge.flops import Seq2SeqShape, seq2seq_flops
from vlbridge.image_inputs import PixelImages
from vlbridge.models.seq2seq_language_model import Seq2SeqLanguageModel
from vlbridge.runs import load_run
from vlbridge.train.checkpoint import WEIGHTS
from vlbridge.train.objectives import get_objective
from vlbridge.train.trainer import train


def test_memvp_on_t5_trains_saves_the_bridge_only_and_answers(make_recipe, tiny_seq2seq_dirs, shapes_dir, tmp_path):
    recipe = make_recipe(f"model.language_model={tiny_seq2seq_dirs['t5']}", "model.bridge=memvp",
                         "model.bridge_options={projector_layers: 1, num_slots: 20}", "train.steps=10",
                         "train.lr=2e-2", "train.eval_every=5", "train.eval_samples=4")
    result = train(recipe, log=lambda *_: None)
    built = result["built"]
    assert isinstance(built.model.language_model, Seq2SeqLanguageModel) and built.chat_format.encoder_decoder
    losses = [h["loss"] for h in result["history"]]
    assert len(losses) == 10 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    report = result["report"]
    assert report["mean_supervised_tokens"] > 1 and report["activation_bytes_per_micro_batch"] > 0
    shape = Seq2SeqShape.of(built.model.language_model)
    assert report["forward_flops_per_sample"]["language_model"] == seq2seq_flops(
        shape, round(report["mean_sequence_length"]), round(report["mean_supervised_tokens"]), 20)
    flops = sample_flops(built.model, text_tokens=12, logit_positions=3)  # what `vlbridge info` prints
    assert flops["lm"] == seq2seq_flops(shape, 12, 3, 20) and flops["text_only_lm"] == seq2seq_flops(shape, 12, 3)

    # the checkpoint holds the trained bridge only; the LM is rebuilt from its folder
    saved = load_file(str(tmp_path / "run" / "final" / WEIGHTS))
    assert set(saved) == set(built.model.trainable_state_dict()) == {
        "bridge.connector.net.0.weight", "bridge.connector.net.0.bias", "bridge.injection.p_k", "bridge.injection.p_v"}
    reloaded, reloaded_recipe = load_run(tmp_path / "run")
    for name, tensor in reloaded.model.trainable_state_dict().items():
        assert torch.equal(tensor, saved[name]), name

    samples = read_llava_json(shapes_dir / "val_short.json", image_root=shapes_dir)[:3]
    images = PixelImages(reloaded.model.vision_encoder.preprocess)
    _, prompts = get_objective("lm").collators(reloaded, reloaded_recipe, images)
    answers = generate_answers(reloaded.model, reloaded.tokenizer, prompts, samples, GenerationSettings(4, 2))
    assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    assert answers == generate_answers(built.model, built.tokenizer, prompts, samples, GenerationSettings(4, 3))

