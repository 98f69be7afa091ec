"""What every connector x injection pair costs, side by side on one LM, read off the bridges' own cost reports.

For each registered pair (``vlbridge.bridges.registry``) between the frozen LM and random vision features of
DINOv2-S's shape (n = 256 grid vectors, 384 wide; the encoder itself is left out, its features are cached in
training), or random pixels for a connector that reads pixels (no encoder), it measures in one run:
- trainable parameters (the bridge);
- LM forward FLOPs per sample: analytic (the injection's ``lm_flops``) and measured (torch's flop counter on
  the whole model, minus the connector's own measured forward), which must agree within 1 %;
- the connector's forward FLOPs (its ``flops`` report);
- train-step time (forward + backward, only the bridge trains) and 1-token latency (prefill + one LM-head row),
  each relative to the text-only LM timed beside it: every repeat times the text-only LM and then every pair
  in turn, and a ratio is the median over repeats of the pair's time over the text-only time of the same repeat
  (this machine has slow periods of seconds to minutes; steps seconds apart share them).
The ``zeros`` connector (MemVP's "w/o visual prompts" ablation) is left out: it has no cost of its own, and into
the input space it has nothing to train.

    python benchmarks/pair_costs.py --out pair_costs.json                 # SmolLM2-135M, n = 256, L = 64
    python benchmarks/pair_costs.py --lm random --repeats 2              # a random-init model of the same shape
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from vlbridge.allocator import keep_freed_memory
from vlbridge.batch import Batch, ImageInputs
from vlbridge.bridges.registry import CONNECTORS, INJECTIONS, build_bridge
from vlbridge.bridges.spec import BridgeSpec
from vlbridge.cost import lm_forward_flops
from vlbridge.flops import count_flops
from vlbridge.models.language_model import count_parameters
from vlbridge.text.tokenize import IGNORE, IMAGE_TOKEN_ID
from vlbridge.vlm import VisionLanguageModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bridge_costs import RANDOM_SHAPES, load_lm, timed  # noqa: E402 (a sibling script, not a package)

LEFT_OUT = ("zeros",)  # connectors without a cost of their own (see the module docstring)
TOLERANCE = 0.01  # analytic vs measured LM FLOPs


def pairs() -> list[tuple[str, str]]:
    return [(c, i) for c in sorted(CONNECTORS) if c not in LEFT_OUT for i in sorted(INJECTIONS)]


def build(connector: str, injection: str, lm, vision_dim: int, grid: int) -> VisionLanguageModel:
    pixels = CONNECTORS[connector].consumes == "pixels"
    bridge = build_bridge(BridgeSpec(connector, {}, injection, {}), lm, None if pixels else vision_dim,
                          None if pixels else grid)
    model = VisionLanguageModel(lm, bridge)
    model.bridge.requires_grad_(True)
    return model


def make_batch(model: VisionLanguageModel | None, rows: int, text: int, answer: int, vocab: int, vision_dim: int,
               grid: int, prompt_only: bool = False) -> Batch:
    """``rows`` rows of ``text`` random text tokens, the last ``answer`` supervised; with a model, an image
    placeholder after the first token and random features (or a full random pixel canvas)."""
    g = torch.Generator().manual_seed(text)
    ids = torch.randint(10, vocab, (rows, text), generator=g)
    images = ImageInputs()
    if model is not None:
        ids = torch.cat([ids[:, :1], torch.full((rows, 1), IMAGE_TOKEN_ID), ids[:, 1:]], 1)
        if model.bridge.consumes == "pixels":
            example = model.bridge.connector.example_input(model.bridge.connector.max_inputs)
            images = ImageInputs(pixel_values=torch.randn(rows, *example.shape[1:], generator=g).clamp(-2, 2))
            images.pixel_values[:, 3:] = 1.0  # the valid-pixel channel, when there is one: the whole canvas
        else:
            images = ImageInputs(grid=torch.randn(rows, grid, vision_dim, generator=g))
    labels = None
    if not prompt_only:
        labels = torch.full_like(ids, IGNORE)
        labels[:, -answer:] = ids[:, -answer:]
    has_image = torch.full((rows,), model is not None)
    return Batch(ids, torch.ones_like(ids), labels, has_image, images, padding_side="left" if prompt_only else "right")


def train_step(model: VisionLanguageModel | None, lm, batch: Batch) -> None:
    if model is None:  # text only: nothing trains, back-propagate to the input embeddings instead
        out = lm(lm.embed(batch.input_ids).detach().requires_grad_(True), batch.attention_mask, batch.labels)
    else:
        out = model(batch)
    (out.loss_sum / out.num_tokens).backward()
    (model or lm).zero_grad(set_to_none=True)


def generate_one(model: VisionLanguageModel | None, lm, batch: Batch) -> None:
    with torch.no_grad():
        if model is None:
            lm.model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, max_new_tokens=1,
                              pad_token_id=0)
        else:
            model.generate(batch, max_new_tokens=1, pad_token_id=0)


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lm = load_lm(args.lm)
    vocab = lm.config.vocab_size
    names = ["text", *(f"{c}->{i}" for c, i in pairs())]
    models = {"text": None, **{f"{c}->{i}": build(c, i, lm, args.vision_dim, args.grid) for c, i in pairs()}}
    batch = {k: make_batch(m, args.batch, args.text, args.answer, vocab, args.vision_dim, args.grid)
             for k, m in models.items()}
    one = {k: make_batch(m, 1, args.text, args.answer, vocab, args.vision_dim, args.grid) for k, m in models.items()}
    prompt = {k: make_batch(m, args.batch, args.text, args.answer, vocab, args.vision_dim, args.grid, prompt_only=True)
              for k, m in models.items()}
    rows = {}
    for k, m in models.items():
        if m is None:
            analytic = lm_forward_flops(lm, args.text, args.answer)
            rows[k] = {"pair": k, "trainable_parameters": 0, "visual_tokens": 0, "connector_flops": 0,
                       "lm_flops_analytic": analytic, "lm_flops_measured": count_flops(lambda: lm(
                           lm.embed(one[k].input_ids), one[k].attention_mask, one[k].labels))}
        else:
            inputs = args.grid if m.bridge.consumes == "features" else m.bridge.connector.max_inputs
            visual = m.bridge.num_visual_tokens(inputs)
            example = m.bridge.connector.example_input(inputs)
            connector_measured = count_flops(lambda: m.bridge.connector(example))
            rows[k] = {"pair": k, "trainable_parameters": count_parameters(m.bridge, trainable_only=True),
                       "visual_tokens": visual, "connector_flops": m.bridge.connector.flops(inputs),
                       "lm_flops_analytic": m.bridge.injection.lm_flops(lm, args.text, visual, args.answer),
                       "lm_flops_measured": count_flops(lambda: m(one[k])) - connector_measured}
            m.train()
        train_step(m, lm, batch[k])  # warm-up
        print(f"  built and counted {k}", file=sys.stderr, flush=True)
    steps = {k: [] for k in names}
    latency = {k: [] for k in names}
    for repeat in range(args.repeats):
        turn = repeat % (len(names) - 1)
        for k in ["text", *names[1 + turn:], *names[1:1 + turn]]:  # text first, the pairs in turn order
            m = models[k]
            if m is not None:
                m.train()
            steps[k].append(timed(lambda: train_step(m, lm, batch[k])))
            if m is not None:
                m.eval()
            latency[k].append(timed(lambda: generate_one(m, lm, prompt[k])))
        print(f"  repeat {repeat + 1}/{args.repeats} ({time.perf_counter() - started:.0f} s)", file=sys.stderr,
              flush=True)
    for k in names:
        row = rows[k]
        row.update({
            "lm_flops_agree": abs(row["lm_flops_measured"] / row["lm_flops_analytic"] - 1) <= TOLERANCE,
            "lm_flops_over_text": row["lm_flops_analytic"] / rows["text"]["lm_flops_analytic"],
            "train_step_s": statistics.median(steps[k]), "latency_s": statistics.median(latency[k]),
            "step_over_text": statistics.median(a / b for a, b in zip(steps[k], steps["text"])),
            "latency_over_text": statistics.median(a / b for a, b in zip(latency[k], latency["text"])),
        })
    settings = {k: v for k, v in vars(args).items() if k != "out"}
    return {"settings": settings, "rows": [rows[k] for k in names], "threads": torch.get_num_threads(),
            "seconds": time.perf_counter() - started}


def table(report: dict) -> str:
    s = report["settings"]
    lines = [f"LM {s['lm']}, {s['text']} text tokens ({s['answer']} supervised), batch {s['batch']}, vision features "
             f"{s['grid']} x {s['vision_dim']} (pixel connectors: their default canvas), {s['repeats']} repeats, "
             f"{report['threads']} threads",
             "",
             "| pair | trainable | visual vectors | LM GFLOPs analytic | measured | x text-only | connector GFLOPs "
             "| train step s | x text-only | 1-token latency s | x text-only |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        agree = "" if r["lm_flops_agree"] else " (differs)"
        lines.append(f"| {r['pair']} | {r['trainable_parameters']:,} | {r['visual_tokens']} | "
                     f"{r['lm_flops_analytic'] / 1e9:.3f} | {r['lm_flops_measured'] / 1e9:.3f}{agree} | "
                     f"{r['lm_flops_over_text']:.2f} | {r['connector_flops'] / 1e9:.3f} | {r['train_step_s']:.2f} | "
                     f"{r['step_over_text']:.2f} | {r['latency_s']:.3f} | {r['latency_over_text']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lm", default="smollm2-135m",
                        help=f"LM: a registry name, a local folder, or a random-init shape {sorted(RANDOM_SHAPES)}")
    parser.add_argument("--text", type=int, default=64, help="text tokens per sample (L)")
    parser.add_argument("--answer", type=int, default=8, help="supervised tokens at the end of each sample")
    parser.add_argument("--grid", type=int, default=256, help="vision grid vectors per image (n)")
    parser.add_argument("--vision-dim", type=int, default=384, help="vision feature width (DINOv2-S: 384)")
    parser.add_argument("--batch", type=int, default=8, help="rows per training step and per prompt batch")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (after one warm-up step each)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--out", help="write the JSON report here")
    args = parser.parse_args(argv)
    keep_freed_memory()
    report = run(args)
    print(table(report))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    return 0 if all(r["lm_flops_agree"] for r in report["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
