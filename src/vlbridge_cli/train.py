"""vlbridge train RECIPE [--set key=value ...]"""

from __future__ import annotations

import json

from vlbridge.train.recipe import load_recipe

HELP = "Train a bridge with a YAML recipe (recipes/*.yaml); --set overrides any key."


def add_arguments(parser) -> None:
    parser.add_argument("recipe", help="path to a YAML recipe, e.g. recipes/llava_shapes.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set train.lr=1e-4 (repeatable; values are YAML)")
    parser.add_argument("--print-recipe", action="store_true", help="print the resolved recipe and exit")


def run(args) -> int:
    import yaml

    recipe = load_recipe(args.recipe, args.overrides)
    if args.print_recipe:
        print(yaml.safe_dump(recipe.to_dict(), sort_keys=False))
        return 0
    from vlbridge.train.trainer import train

    result = train(recipe)
    print(json.dumps({"output_dir": result["output_dir"], "val": result["val"],
                      "wall_seconds": round(result["wall_seconds"], 1)}, indent=1))
    return 0
