"""vlbridge info [RECIPE] [--set ...]"""

from __future__ import annotations

HELP = ("Show a recipe's model: parameters per module group, trainable count, analytic LM FLOPs per sample, and the "
        "precision model.precision / train.precision resolve to on this machine.")


def add_arguments(parser) -> None:
    parser.add_argument("recipe", nargs="?", help="a YAML recipe (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set model.bridge=memvp")
    parser.add_argument("--text-tokens", type=int, default=64, help="text tokens per sample for the FLOPs estimate")


def bridge_origin(model_config) -> str:
    """Where the pair comes from: a preset, a preset with its connector or injection replaced, or the recipe."""
    if model_config.bridge is None:
        return "no preset: connector and injection from the recipe"
    replaced = [key for key in ("connector", "injection") if getattr(model_config, key) is not None]
    if replaced:
        return f"preset {model_config.bridge} with its {' and '.join(replaced)} replaced by model.{replaced[0]}" + (
            f" and model.{replaced[1]}" if len(replaced) > 1 else "")
    return f"preset {model_config.bridge}"


def encoder_layer(encoder, configured: int | None) -> str:
    """The layer the grid features come from: the recipe's, or the encoder's default when it names none."""
    if encoder is None:
        return "none: the connector reads pixels"
    return f"layer {encoder.layer}" + (", the encoder's default" if configured is None else "")


def run(args) -> int:
    from vlbridge.build import build_model
    from vlbridge.cost import describe_sample_flops
    from vlbridge.precision import resolve
    from vlbridge.train.parameter_groups import apply_trainable, format_counts
    from vlbridge.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    built = build_model(recipe.model)
    counts = apply_trainable(built.model, recipe.train.trainable)
    m = recipe.model
    print(f"bridge ({bridge_origin(m)}): {built.spec.describe()}")
    print(f"vision encoder {m.vision_encoder} ({encoder_layer(built.model.vision_encoder, m.vision_layer)}) | "
          f"LM {m.language_model}")
    for name, module in (("vision_encoder", built.model.vision_encoder), ("bridge.connector", built.model.bridge.connector),
                         ("bridge.injection", built.model.bridge.injection), ("language_model", built.model.language_model)):
        count = sum(p.numel() for p in module.parameters()) if module is not None else 0
        print(f"  {name:<18}{count:>14,} parameters")
    print(format_counts(counts))
    print(describe_sample_flops(built.model, args.text_tokens))
    print(resolve(m.precision, recipe.train.precision).describe())  # what auto becomes here
    return 0
