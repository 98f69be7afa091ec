"""Our `llava` preset against transformers' `LlavaForConditionalGeneration` holding the same weights, side by side.

The Hugging Face model is what `vlbridge export --format hf` writes for the same run (SmolLM2-135M-Instruct, DINOv2-S
at its penultimate layer, the LLaVA projector), loaded with `from_pretrained`. Both read the same token ids (ours with
one image placeholder, Hugging Face's with it expanded into the image tokens, as its processor gives them) and the
same pixels. Checked before anything is timed, and the run stops if one fails:

- logits equal within 1e-4 on every real position of a batch of image + question + answer, and the answer loss too;
- greedy generation with the KV cache gives identical tokens (batched, left-padded, a fixed number of new tokens);
- on text-only prompts, our generation and the bare LM's own `generate` give identical tokens.

Then, alternating ours and Hugging Face's so machine load hits both alike, `--repeats` times each:

- train step: forward + backward of the answer loss, only the projector trainable, encoder run on the pixels;
- 1-token latency: one image + question to the first new token (batch 1);
- batched greedy generation, tokens/s with the KV cache;
- text-only generation on the bare LM (our `generate` vs `LlamaForCausalLM.generate` on the same prompts);
- the Q-Former against `Blip2QFormerModel` (benchmarks/qformer_vs_hf.py, forward + backward, queries and joint).

Each row prints the median time of each side and the speed ratio ours / Hugging Face (t_HF / t_ours: >= 1.0 means ours
is at least as fast, the target), as the median over the repeats with the run-to-run spread (min-max of the per-repeat
ratios).

    python benchmarks/vs_huggingface.py              # SmolLM2-135M + DINOv2-S; Q-Formers of BLIP-2 and MiniLM size
    python benchmarks/vs_huggingface.py --repeats 10 --out results.json
    python benchmarks/vs_huggingface.py --quick      # tiny random models: checks the script runs
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image, ImageDraw

from vlbridge.allocator import keep_freed_memory
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID

QUESTIONS = ["What shape is at the top left?", "What color is the large circle in the middle of the picture?",
             "How many shapes are there?", "Is there a red square?", "Describe the image.",
             "Which shape is next to the blue triangle on the right?", "What is below the star?", "Name the colors."]
ANSWERS = ["A circle.", "Blue.", "Three.", "No.", "Two shapes on a grey background.", "A square.", "Nothing.",
           "Red and green."]
TOLERANCE = 1e-4  # logits and loss, ours vs Hugging Face


# plain classes, no dataclasses: tests load this script by path, without a sys.modules entry dataclasses need
class Sizes(NamedTuple):
    batch: int  # prompts per batch (train step and batched generation)
    new_tokens: int  # tokens generated per prompt
    image_size: int  # side of the generated test images


FULL = Sizes(batch=8, new_tokens=32, image_size=224)
QUICK = Sizes(batch=2, new_tokens=4, image_size=56)


class Row:
    """One measurement: seconds per repeat of each side; ``work`` is tokens per run for rows shown as tokens/s."""

    def __init__(self, name: str, work: float = 1.0):
        self.name, self.work = name, work
        self.ours: list[float] = []
        self.hf: list[float] = []

    @property
    def ratios(self) -> list[float]:
        """Speed ratio ours / Hugging Face per repeat (t_HF / t_ours)."""
        return [h / o for o, h in zip(self.ours, self.hf)]

    def to_dict(self) -> dict:
        r = self.ratios
        return {"name": self.name, "ours_seconds": self.ours, "hf_seconds": self.hf, "work": self.work,
                "ratio_median": statistics.median(r), "ratio_min": min(r), "ratio_max": max(r)}


def timed(row: Row, run_ours, run_hf, repeats: int) -> Row:
    """One warm-up each, then ``repeats`` alternating timed runs."""
    run_ours(), run_hf()
    for _ in range(repeats):
        for side, run in (("ours", run_ours), ("hf", run_hf)):
            start = time.perf_counter()
            run()
            getattr(row, side).append(time.perf_counter() - start)
    return row


# ---------------------------------------------------------------------------------------------- the two models
def tiny_models(folder: Path) -> tuple[str, str]:
    """A 2-layer LLaMA with SmolLM2's tokenizer and chat template, and a 2-layer DINOv2 (4 x 4 grid at 56 px)."""
    from transformers import AutoTokenizer, Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM

    from vlbridge.weights.smollm2 import smollm2_folder

    tokenizer = AutoTokenizer.from_pretrained(smollm2_folder(), local_files_only=True)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, initializer_range=0.5, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=True)).save_pretrained(folder / "lm")
    tokenizer.save_pretrained(folder / "lm")
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             patch_size=14, image_size=56)).save_pretrained(folder / "encoder")
    return str(folder / "lm"), str(folder / "encoder")


def build_pair(lm: str, encoder: str, layer: int | None, folder: Path):
    """Our model (a llava run with a drawn projector, saved and reloaded as a run) and the Hugging Face model the
    exporter writes for that run, loaded with ``from_pretrained``."""
    from transformers import LlavaForConditionalGeneration

    from vlbridge.build import build_model
    from vlbridge.export import export_run
    from vlbridge.recipe import load_recipe
    from vlbridge.runs import load_run
    from vlbridge.train.checkpoint import save_checkpoint
    from vlbridge.train.parameter_groups import apply_trainable

    # fp32 on both sides: Hugging Face's model loads in fp32, and model.precision auto would store ours in bf16 here
    overrides = [f"model.language_model={lm}", f"model.vision_encoder={encoder}", "model.bridge=llava",
                 "model.precision=fp32", "train.precision=fp32"]
    recipe = load_recipe(None, overrides + ([f"model.vision_layer={layer}"] if layer is not None else []))
    torch.manual_seed(0)
    built = build_model(recipe.model)
    apply_trainable(built.model, recipe.train.trainable)
    save_checkpoint(built.model, recipe, folder / "run" / "final")
    del built
    export_run(folder / "run", folder / "hf")
    ours, _ = load_run(folder / "run")
    hf = LlavaForConditionalGeneration.from_pretrained(folder / "hf")
    return ours, hf


def make_images(folder: Path, count: int, size: int) -> list[Path]:
    """Seeded pictures of coloured rectangles and ellipses."""
    g = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        image = Image.new("RGB", (size, size), (128, 128, 128))
        draw = ImageDraw.Draw(image)
        for _ in range(3):
            x, y, w, h = (int(v) for v in torch.randint(0, size // 2, (4,), generator=g))
            colour = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=g))
            (draw.rectangle if i % 2 else draw.ellipse)([x, y, x + w + 4, y + h + 4], fill=colour)
        paths.append(folder / f"image_{i}.png")
        image.save(paths[-1])
    return paths


def samples(images: list[Path], count: int, with_answer: bool, with_image: bool = True) -> list[Sample]:
    out = []
    for i in range(count):
        question = QUESTIONS[i % len(QUESTIONS)]
        turns = [Turn("user", f"{IMAGE_PLACEHOLDER}\n{question}" if with_image else question)]
        if with_answer:
            turns.append(Turn("assistant", ANSWERS[i % len(ANSWERS)]))
        out.append(Sample(f"s{i}", tuple(turns), image=images[i % len(images)] if with_image else None))
    return out


def hf_inputs(batch, hf, with_labels: bool = False) -> dict:
    """Our batch as Hugging Face LLaVA reads it: the image placeholder expanded into ``image_seq_length`` image tokens
    (label ignored), the same pixels."""
    config = hf.config
    n, image_id = config.image_seq_length, config.image_token_index
    rows, masks, labels = [], [], []
    for b in range(batch.input_ids.shape[0]):
        ids, mask = batch.input_ids[b].tolist(), batch.attention_mask[b].tolist()
        row_labels = batch.labels[b].tolist() if with_labels else [IGNORE] * len(ids)
        r, m, lab = [], [], []
        for token, keep, label in zip(ids, mask, row_labels):
            count = n if token == IMAGE_TOKEN_ID else 1
            r += [image_id if token == IMAGE_TOKEN_ID else token] * count
            m += [keep] * count
            lab += [IGNORE if token == IMAGE_TOKEN_ID else label] * count
        rows.append(r), masks.append(m), labels.append(lab)
    out = {"input_ids": torch.tensor(rows), "attention_mask": torch.tensor(masks)}
    if batch.images.pixel_values is not None:
        out["pixel_values"] = batch.images.pixel_values
    if with_labels:
        out["labels"] = torch.tensor(labels)
    return out


# ---------------------------------------------------------------------------------------------- the checks
def our_logits(built, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, L', V) logits at every position of the sequence our injection builds, and its (B, L') mask."""
    from vlbridge.models.language_model import positions_from_mask

    model = built.model
    lm = model.language_model
    with torch.no_grad(), model.bridge.injection.inject(lm, batch.input_ids, batch.attention_mask,
                                                        model.visual_vectors(batch), batch.has_image, None,
                                                        batch.padding_side) as inputs:
        hidden = lm.base(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                         position_ids=positions_from_mask(inputs.attention_mask)).last_hidden_state
        return lm.model.get_output_embeddings()(hidden), inputs.attention_mask


def check_logits(built, hf, batch) -> dict:
    """Logits at every real position and the answer loss, ours vs Hugging Face (a right-padded training batch)."""
    ours, mask = our_logits(built, batch)
    inputs = hf_inputs(batch, hf, with_labels=True)
    with torch.no_grad():
        out = hf(**inputs)
        loss = built.model(batch)
    vocabulary = ours.shape[-1]
    real = mask.bool()
    diff = (out.logits[..., :vocabulary][real] - ours[real]).abs().max().item()
    loss_diff = abs(out.loss.item() - (loss.loss_sum / loss.num_tokens).item())
    assert diff < TOLERANCE, f"logits differ by {diff} (ours vs Hugging Face)"
    assert loss_diff < TOLERANCE, f"answer losses differ by {loss_diff}"
    return {"max_logit_difference": diff, "loss_difference": loss_diff, "positions": int(real.sum())}


def fixed_length(model) -> None:
    """Generate exactly max_new_tokens (no end of sequence), so both sides do the same work."""
    model.generation_config.eos_token_id = None


# ---------------------------------------------------------------------------------------------- the Q-Former
def qformer_rows(quick: bool, repeats: int) -> list[Row]:
    """benchmarks/qformer_vs_hf.py's comparison (its own parity check first), as rows of this table."""
    spec = importlib.util.spec_from_file_location("qformer_vs_hf", Path(__file__).with_name("qformer_vs_hf.py"))
    qformer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(qformer)
    from vlbridge.bridges.qformer import QFormerConfig

    configs = {"tiny": (QFormerConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                      encoder_hidden_size=32, num_query_tokens=4, vocab_size=128), 2, 16, 8)} \
        if quick else qformer.CONFIGS  # BLIP-2's size and MiniLM's
    rows = []
    for name, (config, batch, n, length) in configs.items():
        torch.manual_seed(0)
        ours, hf, emb = qformer.build(config)
        params = [*ours.parameters(), *hf.parameters(), *emb.parameters()]
        for mode in ("queries", "joint"):
            run_ours, run_hf = qformer.runners(config, ours, hf, emb, batch, n, length, mode)
            for m in (ours, hf, emb):
                m.eval()
            with torch.no_grad():
                diff = (run_ours() - run_hf()).abs().max().item()
            assert diff < TOLERANCE, f"Q-Former outputs differ by {diff} ({mode})"
            for m in (ours, hf, emb):
                m.train()
            rows.append(timed(Row(f"Q-Former {name} {mode}: forward + backward"), lambda: qformer.step(run_ours, params),
                              lambda: qformer.step(run_hf, params), repeats))
    return rows


# ---------------------------------------------------------------------------------------------- the run
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny random models, small batches, 2 repeats: checks that the script runs")
    parser.add_argument("--lm", default=None, help="language model (default smollm2-135m; --quick: a tiny random one)")
    parser.add_argument("--encoder", default=None,
                        help="vision encoder (default dinov2-small; --quick: a tiny random one)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per side and row (default 5; --quick 2)")
    parser.add_argument("--batch", type=int, default=None, help="prompts per batch (default 8; --quick 2)")
    parser.add_argument("--new-tokens", type=int, default=None, help="tokens generated per prompt (default 32)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    keep_freed_memory()
    torch.set_num_threads(args.threads)
    base = QUICK if args.quick else FULL
    sizes = Sizes(args.batch or base.batch, args.new_tokens or base.new_tokens, base.image_size)
    repeats = args.repeats or (2 if args.quick else 5)
    if repeats < 1 or sizes.batch < 1 or sizes.new_tokens < 1:
        parser.error("--repeats, --batch and --new-tokens must be >= 1")

    from vlbridge.runs import prompt_collator

    with tempfile.TemporaryDirectory(prefix="vs_huggingface.") as tmp:
        folder = Path(tmp)
        lm, encoder = args.lm, args.encoder
        if args.quick and (lm is None or encoder is None):
            tiny_lm, tiny_encoder = tiny_models(folder)
            lm, encoder = lm or tiny_lm, encoder or tiny_encoder
        lm, encoder = lm or "smollm2-135m", encoder or "dinov2-small"
        # the packaged encoder's grid is its penultimate layer (LLaVA's choice); a 2-layer tiny one's, its last
        layer = -1 if args.quick and args.encoder is None else None
        built, hf = build_pair(lm, encoder, layer, folder)
        images = make_images(folder, sizes.batch, sizes.image_size)
        train_batch = prompt_collator(built, with_answer=True)(samples(images, sizes.batch, with_answer=True))
        prompt_batch = prompt_collator(built)(samples(images, sizes.batch, with_answer=False))
        text_batch = prompt_collator(built)(samples(images, sizes.batch, with_answer=False, with_image=False))
        one = prompt_collator(built)(samples(images, 1, with_answer=False))
        pad = built.tokenizer.pad_token_id
        built.model.eval(), hf.eval()
        report = {"parity": check_logits(built, hf, train_batch)}

        # greedy generation: identical tokens first, then timed
        fixed_length(built.model.language_model.model), fixed_length(hf)
        n = sizes.new_tokens

        def ours_generate(batch, tokens):
            return built.model.generate(batch, max_new_tokens=tokens, pad_token_id=pad)

        def hf_generate(inputs, tokens):
            out = hf.generate(**inputs, max_new_tokens=tokens, pad_token_id=pad, do_sample=False)
            return out[:, inputs["input_ids"].shape[1]:]

        prompt_inputs, one_inputs = hf_inputs(prompt_batch, hf), hf_inputs(one, hf)
        ours_tokens, hf_tokens = ours_generate(prompt_batch, n), hf_generate(prompt_inputs, n)
        assert torch.equal(ours_tokens, hf_tokens), f"greedy generations differ:\n{ours_tokens}\n{hf_tokens}"
        bare = built.model.language_model.model  # the LM itself: its own generate on the same text-only prompts

        def bare_generate():
            out = bare.generate(input_ids=text_batch.input_ids, attention_mask=text_batch.attention_mask,
                                max_new_tokens=n, pad_token_id=pad, do_sample=False)
            return out[:, text_batch.input_ids.shape[1]:]

        text_tokens = ours_generate(text_batch, n)
        assert torch.equal(text_tokens, bare_generate()), "text-only generations differ (ours vs the LM's generate)"
        report["generations_identical"] = {"image_prompts": ours_tokens.tolist(), "text_prompts": text_tokens.tolist()}

        # train step: the projector trains, on both sides
        hf.requires_grad_(False)
        hf.model.multi_modal_projector.requires_grad_(True)
        train_inputs = hf_inputs(train_batch, hf, with_labels=True)
        ours_params = [p for p in built.model.parameters() if p.requires_grad]
        hf_params = [p for p in hf.parameters() if p.requires_grad]

        def step(run, params):
            def go():
                for p in params:
                    p.grad = None
                run().backward()
            return go

        def ours_loss():
            out = built.model(train_batch)
            return out.loss_sum / out.num_tokens

        rows = [
            timed(Row(f"train step (batch {sizes.batch}, projector trains)"), step(ours_loss, ours_params),
                  step(lambda: hf(**train_inputs).loss, hf_params), repeats),
            timed(Row("1-token latency (batch 1, image + question)"), lambda: ours_generate(one, 1),
                  lambda: hf_generate(one_inputs, 1), repeats),
            timed(Row(f"greedy generation tokens/s (batch {sizes.batch}, {n} tokens, KV cache)", work=sizes.batch * n),
                  lambda: ours_generate(prompt_batch, n), lambda: hf_generate(prompt_inputs, n), repeats),
            timed(Row(f"text-only generation tokens/s on the bare LM (batch {sizes.batch}, {n} tokens)",
                      work=sizes.batch * n), lambda: ours_generate(text_batch, n), bare_generate, repeats),
        ]
        rows += qformer_rows(args.quick, repeats)

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads; LM {lm}, "
          f"encoder {encoder}; {repeats} alternating repeats after a warm-up")
    parity = report["parity"]
    print(f"parity: logits max |ours - HF| {parity['max_logit_difference']:.2e} over {parity['positions']} positions, "
          f"answer loss {parity['loss_difference']:.2e} (< {TOLERANCE}); greedy generations identical (image prompts, "
          "and text-only prompts vs the LM's own generate)")
    print(f"{'measurement':74} {'ours':>10} {'HF':>10} {'ours/HF speed':>14} {'spread':>13}")
    for row in rows:
        r = row.ratios
        o, h = statistics.median(row.ours), statistics.median(row.hf)
        values = (f"{row.work / o:10.1f} {row.work / h:10.1f}" if row.work != 1.0 else f"{o:9.3f}s {h:9.3f}s")
        print(f"{row.name:74} {values} {statistics.median(r):14.2f} {min(r):6.2f}-{max(r):<6.2f}", flush=True)
    report["rows"] = [row.to_dict() for row in rows]
    report["settings"] = {"lm": lm, "encoder": encoder, "repeats": repeats, "batch": sizes.batch,
                          "new_tokens": sizes.new_tokens, "threads": args.threads, "quick": args.quick}
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
