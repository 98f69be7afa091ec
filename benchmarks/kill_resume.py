"""Kill and resume: a training run killed with SIGKILL at random steps and resumed each time ends bit for bit where
the same run ends uninterrupted, and a damaged latest checkpoint is skipped for the one before.

A tiny random LLaMA and DINOv2 (or ``--lm`` / ``--encoder`` folders) joined by MemVP with LoRA (both have dropout,
so every random generator's state matters) train on Shapes short answers for ``--steps`` steps with a checkpoint
every ``--save-every`` and evaluation every ``--eval-every``, each in its own ``vlbridge train`` process:

1. the reference: the run, uninterrupted;
2. the same run started, then ``--kills`` times: wait until the run has logged a step drawn at random, wait a random
   part of a step more (so kills also land in the middle of a checkpoint save), SIGKILL the process and start
   ``vlbridge train --resume``; once (``--damage-at``, the kill after which at least two checkpoints exist), the
   latest checkpoint's ``trained.safetensors`` is truncated before resuming, and the resume must say it skipped it.

Then the killed run's final weights, its last step checkpoints (trained tensors, optimizer state, random states,
training state) and its metrics log are compared with the reference's: bytes for the safetensors files, values for
the JSON files with timing fields (``*_seconds``, ``*_per_s``) left out. Prints the figures and writes
OUT/kill_resume.json; exits with 1 if anything differs.

    python benchmarks/kill_resume.py --out /tmp/kill_resume                                 # BENCHMARKS.md
    python benchmarks/kill_resume.py --out DIR --quick --lm LM_DIR --encoder ENCODER_DIR    # tests
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

COMPARED = ("trained.safetensors", "training_state.safetensors", "rng-0.safetensors")  # byte for byte
COMPARED_JSON = ("training_state.json", "rng-0.json")  # value for value, timing fields left out


# --- the run ---------------------------------------------------------------------------------------------------
def tiny_models(folder: Path) -> tuple[Path, Path]:
    """A 2-layer LLaMA with SmolLM2's tokenizer and chat template, and a 2-layer DINOv2 (4 x 4 grid at 56 px)."""
    import torch
    from transformers import AutoTokenizer, Dinov2Config, Dinov2Model, LlamaConfig, LlamaForCausalLM

    from vlbridge.weights.smollm2 import smollm2_folder

    lm, encoder = folder / "tiny_llama", folder / "tiny_dinov2"
    if not (lm / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(smollm2_folder(), local_files_only=True)
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                             bos_token_id=tokenizer.bos_token_id, tie_word_embeddings=True)
        LlamaForCausalLM(config).save_pretrained(lm)
        tokenizer.save_pretrained(lm)
    if not (encoder / "config.json").is_file():
        torch.manual_seed(0)
        Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 patch_size=14, image_size=56)).save_pretrained(encoder)
    return lm, encoder


def write_recipe(args, lm: Path, encoder: Path) -> Path:
    from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
    from vlbridge.data.shapes_export import export_shapes
    from vlbridge.recipe import load_recipe

    data = args.out / "data"
    if not (data / "train_short.json").is_file():
        export_shapes(generate_shapes(ShapesConfig(n=40, seed=1, image_size=56)), data, ["llava"])
    recipe = load_recipe(None, [
        f"model.language_model={lm}", f"model.vision_encoder={encoder}", "model.vision_layer=-1",
        "model.bridge=memvp", "model.bridge_options={num_slots: 20}", "model.lora_rank=2",
        f"data.train={data / 'train_short.json'}", f"data.val={data / 'val_short.json'}", f"data.image_root={data}",
        "data.cache_features=false", f"train.steps={args.steps}", "train.batch_size=4", "train.grad_accum=2",
        "train.lr=5e-3", "train.warmup_steps=2", f"train.save_every={args.save_every}", "train.keep_checkpoints=2",
        f"train.eval_every={args.eval_every}", "train.eval_samples=2", "train.threads=1", f"train.seed={args.seed}",
        "eval.max_new_tokens=2"])
    path = args.out / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
    return path


def launch(arguments: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "vlbridge_cli.main", "train", *arguments], stdout=out,
                                stderr=subprocess.STDOUT, env=os.environ | {"OMP_NUM_THREADS": "1"})


def logged_steps(run: Path) -> list[dict]:
    """The per-step lines of the run's metrics.jsonl (a line being written is left out)."""
    lines = []
    path = run / "metrics.jsonl"
    for text in (path.read_text().splitlines() if path.is_file() else []):
        try:
            line = json.loads(text)
        except ValueError:
            continue
        if "loss" in line:
            lines.append(line)
    return lines


def last_step(run: Path) -> int:
    return max((line["step"] for line in logged_steps(run)), default=0)


def checkpoints(run: Path) -> list[str]:
    from vlbridge.train.state import step_checkpoints

    return [path.name for _, path in step_checkpoints(run)]


# --- comparison ------------------------------------------------------------------------------------------------
def untimed(value):
    """``value`` without the fields that hold wall-clock measurements, which no two runs share."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if not (k.endswith("_seconds") or k.endswith("_per_s"))}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def compare_runs(run: Path, reference: Path) -> dict:
    """What is and is not bitwise equal between two runs of the same recipe: ``{check: True/False}``."""
    found = {}
    final = "final/trained.safetensors"
    found[final] = (run / final).read_bytes() == (reference / final).read_bytes()
    names = checkpoints(reference)
    found["same step checkpoints"] = checkpoints(run) == names
    for name in names:
        for file in COMPARED:
            a, b = run / name / file, reference / name / file
            found[f"{name}/{file}"] = a.is_file() and a.read_bytes() == b.read_bytes()
        for file in COMPARED_JSON:
            a, b = run / name / file, reference / name / file
            found[f"{name}/{file}"] = a.is_file() and untimed(json.loads(a.read_text())) == untimed(
                json.loads(b.read_text()))
    found["metrics.jsonl"] = untimed([json.loads(t) for t in (run / "metrics.jsonl").read_text().splitlines()]) == \
        untimed([json.loads(t) for t in (reference / "metrics.jsonl").read_text().splitlines()])
    return found


# --- kill and resume -------------------------------------------------------------------------------------------
def kill_and_resume(args, recipe: Path, run: Path, step_seconds: float) -> dict:
    rng = random.Random(args.seed)
    last = args.steps - 3  # kills land up to 1.5 steps late: none after the final save (a finished run)
    targets = sorted(rng.sample(range(1, last + 1), args.kills))
    logs = args.out / "logs"
    events, damaged = [], None
    process = launch([str(recipe), "--set", f"train.output_dir={run}", "--overwrite"], logs / "killed-0.log")
    for target in targets:
        target = max(target, last_step(run) + 1)  # what the previous process logged is not progress
        if target > last:
            break
        while process.poll() is None and last_step(run) < target:
            time.sleep(0.02)
        if process.poll() is not None:
            break  # the run got to its end before this kill
        time.sleep(rng.uniform(0, 1.5 * step_seconds))  # anywhere in the next step, a checkpoint save included
        process.send_signal(signal.SIGKILL)
        process.wait()
        event = {"kill": len(events) + 1, "target_step": target, "logged_step_at_kill": last_step(run),
                 "checkpoints_left": checkpoints(run)}
        if damaged is None and len(events) + 1 >= args.damage_at and len(event["checkpoints_left"]) >= 2:
            latest = run / event["checkpoints_left"][-1] / "trained.safetensors"
            latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
            damaged = event["damaged"] = event["checkpoints_left"][-1]
        events.append(event)
        log = logs / f"killed-{len(events)}.log"
        process = launch(["--resume", str(run)], log)
        event["log"] = str(log)
    if process.wait() != 0:
        raise SystemExit(f"the last resume failed (exit {process.returncode}); see {logs}")
    for event in events:  # what each resume said it did
        said = Path(event["log"]).read_text()
        resumed = [line for line in said.splitlines() if line.startswith(f"resumed {run} from ")]
        event["resumed_from"] = resumed[0].split(" from ")[1].split(" at ")[0] if resumed else "step 0 (no checkpoint)"
        if "damaged" in event:
            event["skipped_damaged"] = (f"resuming from {event['resumed_from']}, the newest complete checkpoint, "
                                        f"instead of {event['damaged']}") in said
    return {"events": events, "damaged": damaged}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the models, data, runs, logs and JSON")
    parser.add_argument("--lm", type=Path, help="a local causal LM folder (default: a tiny random LLaMA made here)")
    parser.add_argument("--encoder", type=Path, help="a local vision model folder (default: a tiny random DINOv2)")
    parser.add_argument("--steps", type=int, default=100, help="training steps of the run")
    parser.add_argument("--save-every", type=int, default=4, help="a step checkpoint every N steps")
    parser.add_argument("--eval-every", type=int, default=10, help="evaluation (generation) every N steps")
    parser.add_argument("--kills", type=int, default=20, help="how many times the run is killed")
    parser.add_argument("--damage-at", type=int, default=10,
                        help="damage the latest checkpoint after this kill (or the first later one with two "
                             "checkpoints)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the run and of the kill steps and delays")
    parser.add_argument("--quick", action="store_true", help="12 steps, 2 kills: checks the pipeline")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.save_every, args.eval_every, args.kills, args.damage_at = 12, 2, 6, 2, 1
    if not 1 <= args.kills <= args.steps - 3:
        parser.error("--kills must be at least 1 and at most --steps minus 3")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "logs").mkdir(exist_ok=True)
    if args.lm is None or args.encoder is None:
        lm, encoder = tiny_models(args.out / "models")
        args.lm, args.encoder = args.lm or lm, args.encoder or encoder
    recipe = write_recipe(args, args.lm, args.encoder)

    reference, run = args.out / "reference", args.out / "killed"
    started = time.perf_counter()
    process = launch([str(recipe), "--set", f"train.output_dir={reference}", "--overwrite"],
                     args.out / "logs" / "reference.log")
    if process.wait() != 0:
        raise SystemExit(f"the reference run failed; see {args.out / 'logs' / 'reference.log'}")
    step_seconds = statistics.median(line["step_seconds"] for line in logged_steps(reference))
    result = kill_and_resume(args, recipe, run, step_seconds)
    checks = compare_runs(run, reference)
    events = result["events"]
    damage = next((e for e in events if "damaged" in e), None)
    report = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "kills": len(events), "resumes": len(events),
        "kill_steps": [e["logged_step_at_kill"] for e in events],
        "resumed_from": [e["resumed_from"] for e in events],
        "damaged_checkpoint": result["damaged"],
        "damaged_checkpoint_skipped": bool(damage and damage["skipped_damaged"]),
        "final_weights_bitwise_equal": checks["final/trained.safetensors"],
        "training_state_bitwise_equal": all(v for k, v in checks.items() if k.startswith("checkpoint-"))
        and checks["same step checkpoints"],
        "metrics_equal": checks["metrics.jsonl"],
        "checks": checks, "events": events, "reference_step_seconds": step_seconds,
        "wall_seconds": time.perf_counter() - started,
    }
    (args.out / "kill_resume.json").write_text(json.dumps(report, indent=1))
    yes = {True: "yes", False: "NO"}
    print(f"kills: {report['kills']} (at logged steps {report['kill_steps']}), resumes: {report['resumes']}")
    print(f"resumed from: {report['resumed_from']}")
    print(f"damaged latest checkpoint: {result['damaged']}, skipped for the previous one: "
          f"{yes[report['damaged_checkpoint_skipped']]}")
    print(f"final weights bitwise equal to the uninterrupted run: {yes[report['final_weights_bitwise_equal']]}")
    print(f"training state ({', '.join(checkpoints(reference))}: trained tensors, optimizer, random states, "
          f"schedule, data position) bitwise equal: {yes[report['training_state_bitwise_equal']]}")
    print(f"metrics.jsonl equal (timing fields left out): {yes[report['metrics_equal']]}")
    print(f"wall time {report['wall_seconds']:.0f} s; {args.out / 'kill_resume.json'}")
    good = (report["final_weights_bitwise_equal"] and report["training_state_bitwise_equal"]
            and report["metrics_equal"] and report["damaged_checkpoint_skipped"] and report["kills"] == args.kills)
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
