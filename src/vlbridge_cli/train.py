"""vlbridge train RECIPE [--set key=value ...] [--overwrite] | vlbridge train --resume RUN_DIR

Runs the same under ``python``, ``accelerate launch`` and ``torchrun`` (see the README, "Long runs").
"""

from __future__ import annotations

import json
from pathlib import Path

from vlbridge.errors import ConfigError
from vlbridge.recipe import load_recipe

HELP = "Train a bridge with a YAML recipe (recipes/*.yaml); --set overrides any key; --resume continues a run."


def add_arguments(parser) -> None:
    parser.add_argument("recipe", nargs="?", default=None,
                        help="path to a YAML recipe, e.g. recipes/llava_shapes.yaml (optional with --resume: "
                             "the run's own recipe.yaml is used)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set train.lr=1e-4 (repeatable; values are YAML)")
    parser.add_argument("--resume", metavar="RUN_DIR", default=None,
                        help="continue the run in RUN_DIR from its latest step checkpoint (train.save_every), "
                             "exactly as if it had not stopped; a damaged checkpoint is skipped for the one before, "
                             "saying so")
    parser.add_argument("--overwrite", action="store_true",
                        help="train.output_dir may hold another run: remove that run's files first (its checkpoints, "
                             "final weights, logs and evaluation reports; nothing else). Without it such a folder is "
                             "refused")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="torch threads, the same as --set train.threads=N (default 0 = all cores). With another "
                             "CPU-bound job on the machine, all cores can make each step several times slower (a "
                             "1.2 s step took 8-27 s; training warns when steps slow down): give fewer threads then")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")


def run(args) -> int:
    import yaml

    if args.recipe is None and args.resume is None:
        raise ConfigError("give a recipe, or --resume RUN_DIR")
    source = args.recipe if args.recipe is not None else Path(args.resume) / "recipe.yaml"
    if args.recipe is None and not source.is_file():  # name the option, not a file the user never gave
        raise ConfigError(f"--resume {args.resume}: " + ("no such folder" if not Path(args.resume).is_dir() else
                                                          "not a run folder (it holds no recipe.yaml)"))
    recipe = load_recipe(source, [*args.overrides, *([f"train.threads={args.threads}"] if args.threads is not None
                                                      else [])])
    if args.print_recipe:
        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        return 0
    from vlbridge.train.trainer import train

    result = train(recipe, resume=args.resume, overwrite=args.overwrite)
    if result["process_index"] == 0:  # one summary, not one per process
        print(json.dumps({"output_dir": result["output_dir"], "val": result["val"],
                          "wall_seconds": round(result["wall_seconds"], 1),
                          "skipped_records": len(result["skipped_records"])}, indent=1))
    return 0
