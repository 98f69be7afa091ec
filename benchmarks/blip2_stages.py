"""BLIP-2's central claim in miniature: representation learning (stage 1) makes generative learning (stage 2) better.

On the built-in Shapes captions with the packaged DINOv2-S/14 (frozen, features cached), a Q-Former initialised
from all-MiniLM-L6-v2 and the frozen SmolLM2-135M, through the one trainer and the shipped recipes
(recipes/blip2/stage1.yaml, stage2.yaml):

1. stage 1 (ITC + ITM + ITG) for N1 steps -> image-text retrieval on the held-out val images and all their
   reference captions: Recall@1/5/10 both ways from ITC scores and with ITM re-ranking of the top k, against
   chance and against the untrained stage-1 model;
2. stage 2 from the stage-1 Q-Former and stage 2 from the untrained (MiniLM-initialised) Q-Former, the same N2
   steps and seed (so the same batches in the same order) -> training-loss curves, teacher-forced caption loss
   on val, BLEU-4 and CIDEr-D of greedy captions on val (COCO caption toolkit conventions).

Writes OUT/blip2_stages.json (every number and the settings) and OUT/blip2_stages.png (curves).

    python benchmarks/blip2_stages.py --out runs/blip2_stages            # the recorded run (docs/blip2.md)
    python benchmarks/blip2_stages.py --out /tmp/blip2_quick --quick     # the whole pipeline in a few minutes
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import torch

from vlbridge.bridges.qformer.retrieval import evaluate_retrieval as qformer_retrieval
from vlbridge.data.llava_json import read_llava_json
from vlbridge.data.shapes_folder import shapes_folder
from vlbridge.eval.loss import validation_loss
from vlbridge.eval.retrieval import MAX_TEXT_TOKENS, text_tokenizer_for, tokenize_texts
from vlbridge.metrics.caption import caption_scores
from vlbridge.bridges.qformer.objective import references
from vlbridge.train.objectives import get_objective
from vlbridge.recipe import load_recipe
from vlbridge.runs import image_loader
from vlbridge.train.trainer import train

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "blip2"


def chance_recall(num_images: int, captions_per_image: int, k: int) -> dict[str, float]:
    """Expected Recall@K (%) of a random ranking: image->text finds one of its c captions among c*N texts in the
    top K (1 - C(cN - c, K) / C(cN, K)); text->image finds its image among N in the top K (K / N)."""
    texts = num_images * captions_per_image
    miss = math.comb(texts - captions_per_image, k) / math.comb(texts, k) if k <= texts else 0.0
    return {"i2t": 100 * (1 - miss), "t2i": 100 * min(k, num_images) / num_images}


@torch.no_grad()
def retrieval_scores(built, recipe, val, rerank_k: int) -> dict:
    """Recall@1/5/10 of `bridge.connector.stage1` on the val images and all their captions: ITC, and ITC + ITM re-ranking."""
    stage1 = built.model.bridge.connector.stage1
    images = image_loader(built, recipe)
    features = torch.cat([images(val[i:i + 32]).grid for i in range(0, len(val), 32)])  # (N, n, d_v)
    texts, owner = [], []
    for index, sample in enumerate(val):
        texts += references(sample)
        owner += [index] * len(references(sample))
    ids, mask = tokenize_texts(text_tokenizer_for(recipe.model.bridge), texts, MAX_TEXT_TOKENS)
    owner = torch.tensor(owner)
    return {"itc": qformer_retrieval(stage1, features, ids, mask, owner),
            f"itc_itm_top{rerank_k}": qformer_retrieval(stage1, features, ids, mask, owner, rerank_k=rerank_k),
            "num_images": len(val), "num_texts": len(texts)}


def caption_loss(built, recipe, val) -> float:
    """Teacher-forced LM loss per caption token on every val sample (the answer tokens, as in training)."""
    collator, _ = get_objective("lm").collators(built, recipe, image_loader(built, recipe))
    return validation_loss(built.model, collator, val)


def captions_cider(run: Path, val) -> dict:
    """BLEU-4 and CIDEr-D of the run's final greedy captions of every val image against its reference captions."""
    predicted = {p["id"]: p["prediction"] for p in json.loads((run / "predictions.json").read_text())}
    scores = caption_scores({s.id: references(s) for s in val}, {s.id: predicted[s.id] for s in val})
    examples = [{"id": s.id, "prediction": predicted[s.id], "reference": references(s)[0]} for s in val[:3]]
    return {"CIDEr": scores["corpus"]["CIDEr"], "Bleu_4": scores["corpus"]["Bleu_4"], "examples": examples}


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v - (values[i - window] if i >= window else 0.0)
        out.append(total / min(i + 1, window))
    return out


def plot(stage1_history: list[dict], stage2: dict[str, list[dict]], numbers: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = range(1, len(stage1_history) + 1)
    window = max(1, len(stage1_history) // 20)
    for key, color in (("itc", "tab:blue"), ("itm", "tab:orange"), ("itg", "tab:green"), ("loss", "black")):
        left.plot(steps, moving_average([h[key] for h in stage1_history], window), color=color,
                  label=key if key != "loss" else "ITC + ITM + ITG")
    r1 = numbers["stage1"]["retrieval"]["itc"]
    left.set(title=f"Stage 1 (moving average of {window}); val R@1 i2t {r1['i2t_R@1']:.0f} %, t2i {r1['t2i_R@1']:.0f} %",
             xlabel="step", ylabel="loss")
    left.legend()
    for (name, history), color in zip(stage2.items(), ("tab:red", "tab:gray")):
        losses = [h["loss"] for h in history]
        window = max(1, len(losses) // 10)
        n = numbers["stage2"][name]
        right.plot(range(1, len(losses) + 1), losses, color=color, alpha=0.25)
        right.plot(range(1, len(losses) + 1), moving_average(losses, window), color=color,
                   label=f"{name}: val loss {n['val_caption_loss']:.3f}, CIDEr {n['captions']['CIDEr']:.3f}")
    right.set(title=f"Stage 2, same batches (moving average of {window})", xlabel="step",
              ylabel="caption loss (LM, per token)")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the data, runs, JSON and PNG")
    parser.add_argument("--quick", action="store_true", help="tiny settings to check the pipeline (minutes)")
    parser.add_argument("--n", type=int, default=300, help="Shapes scenes (80 %% train, 10 %% val)")
    parser.add_argument("--data-seed", type=int, default=0, help="seed of the Shapes data")
    parser.add_argument("--seed", type=int, default=0, help="training seed (init, data order, dropout) of all runs")
    parser.add_argument("--queries", type=int, default=32, help="Q-Former queries = soft tokens (BLIP-2: 32)")
    parser.add_argument("--stage1-steps", type=int, default=200, help="stage-1 optimizer steps")
    parser.add_argument("--stage1-batch", type=int, default=16, help="stage-1 image-caption pairs per step")
    parser.add_argument("--stage1-lr", type=float, default=1e-4, help="stage-1 peak learning rate")
    parser.add_argument("--stage2-steps", type=int, default=100, help="stage-2 optimizer steps (both runs)")
    parser.add_argument("--stage2-batch", type=int, default=8, help="stage-2 samples per step")
    parser.add_argument("--stage2-lr", type=float, default=1e-4, help="stage-2 peak learning rate (both runs)")
    parser.add_argument("--rerank-k", type=int, default=16, help="ITM re-ranks each query's top k ITC results")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = all cores)")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.queries, args.stage1_steps, args.stage1_batch, args.stage2_steps, args.stage2_batch = \
            60, 8, 8, 8, 6, 4
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    data = shapes_folder(out, args.n, args.data_seed, formats=("llava", "coco"))  # LLaVA captions + COCO layout
    common = [f"data.train={data / 'train_caption.json'}", f"data.val={data / 'val_caption.json'}",
              f"data.image_root={data}", f"train.seed={args.seed}", f"train.threads={args.threads}",
              "train.eval_samples=0", "train.save_every=0"]
    val = list(read_llava_json(data / "val_caption.json", image_root=data))

    # 1. stage 1, then retrieval on held-out captions
    stage1_dir = out / "stage1"
    recipe1 = load_recipe(RECIPES / "stage1.yaml", common + [
        f"model.bridge_options.num_query_tokens={args.queries}", f"train.steps={args.stage1_steps}",
        f"train.batch_size={args.stage1_batch}", f"train.lr={args.stage1_lr}",
        f"train.warmup_steps={max(1, args.stage1_steps // 10)}", f"train.eval_every={max(1, args.stage1_steps // 2)}",
        f"train.output_dir={stage1_dir}"])
    from vlbridge.build import build_model

    torch.manual_seed(args.seed)  # the model stage 1 starts from (the same seed as the run)
    untrained = build_model(recipe1.model)
    before = retrieval_scores(untrained, recipe1, val, args.rerank_k)
    del untrained
    result1 = train(recipe1, overwrite=True)  # the benchmark's own folders: a rerun replaces them
    retrieval = retrieval_scores(result1["built"], recipe1, val, args.rerank_k)
    captions_per_image = retrieval["num_texts"] // retrieval["num_images"]
    chance = {f"r{k}": chance_recall(len(val), captions_per_image, k) for k in (1, 5, 10)}
    del result1["built"]

    # 2. stage 2 from stage 1 and from the untrained Q-Former: same steps, seed and batches
    stage2_numbers, stage2_history = {}, {}
    for name, init_from in (("from stage 1", str(stage1_dir)), ("without stage 1", None)):
        run = out / ("stage2_from_stage1" if init_from else "stage2_without_stage1")
        recipe2 = load_recipe(RECIPES / "stage2.yaml", common + [
            f"model.init_from={init_from if init_from else 'null'}",
            f"model.bridge_options.num_query_tokens={args.queries}", f"train.steps={args.stage2_steps}",
            f"train.batch_size={args.stage2_batch}", f"train.lr={args.stage2_lr}",
            f"train.warmup_steps={max(1, args.stage2_steps // 10)}", "train.eval_every=0",
            f"train.output_dir={run}"])
        result = train(recipe2, overwrite=True)
        history = result["history"]
        stage2_history[name] = history
        tail = max(1, len(history) // 5)
        stage2_numbers[name] = {
            "run": str(run),
            "train_loss_first_step": history[0]["loss"],
            f"train_loss_mean_last_{tail}_steps": sum(h["loss"] for h in history[-tail:]) / tail,
            "val_caption_loss": caption_loss(result["built"], recipe2, val),
            "captions": captions_cider(run, val),
        }
        del result["built"]

    numbers = {
        "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "data": {"folder": str(data), "val_images": len(val), "captions_per_image": captions_per_image},
        "stage1": {"run": str(stage1_dir), "steps": args.stage1_steps,
                   "loss_first_step": result1["history"][0], "loss_last_step": result1["history"][-1],
                   "retrieval_untrained": before, "retrieval": retrieval, "chance": chance},
        "stage2": stage2_numbers,
        "wall_seconds": time.perf_counter() - started,
    }
    (out / "blip2_stages.json").write_text(json.dumps(numbers, indent=1))
    plot(result1["history"], stage2_history, numbers, out / "blip2_stages.png")
    itc = retrieval["itc"]
    print(f"stage 1 ({args.stage1_steps} steps): val R@1 i2t {itc['i2t_R@1']:.1f} %, t2i {itc['t2i_R@1']:.1f} % "
          f"(chance {chance['r1']['i2t']:.1f} / {chance['r1']['t2i']:.1f} %; untrained "
          f"{before['itc']['i2t_R@1']:.1f} / {before['itc']['t2i_R@1']:.1f} %)")
    for name, n in stage2_numbers.items():
        print(f"stage 2 {name} ({args.stage2_steps} steps): val caption loss {n['val_caption_loss']:.4f}, "
              f"CIDEr {n['captions']['CIDEr']:.3f}, BLEU-4 {n['captions']['Bleu_4']:.3f}")
    print(f"wrote {out / 'blip2_stages.json'} and {out / 'blip2_stages.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
