"""vlbridge generate --image PATH [--image PATH ...] --prompt TEXT [--run RUN_DIR | --recipe RECIPE]"""

from __future__ import annotations

HELP = "Answer a prompt about an image with a trained run (or the untrained default model)."


def add_arguments(parser) -> None:
    parser.add_argument("--image", required=True, action="append",
                        help="image file (any format Pillow reads); repeat it for a clip, frames in time order (a "
                             "bridge whose connector takes clips, e.g. the Perceiver resampler: docs/data.md)")
    parser.add_argument("--prompt", required=True, help="the question or instruction")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", dest="run_dir", help="a run folder written by vlbridge train")
    source.add_argument("--recipe", help="a recipe to build an untrained model from (default: built-in defaults)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="maximum tokens to generate (>= 1)")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature, > 0 (with --sample)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (with --sample)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling")


def check_arguments(args) -> None:
    """Out-of-range options fail here, naming the valid range, before a model is built."""
    import math

    from vlbridge.errors import ConfigError

    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {args.max_new_tokens}: must be an integer >= 1")
    if not (math.isfinite(args.temperature) and args.temperature > 0):
        raise ConfigError(f"--temperature {args.temperature}: must be a number > 0")
    if not (math.isfinite(args.top_p) and 0 < args.top_p <= 1):
        raise ConfigError(f"--top-p {args.top_p}: must be a number in (0, 1]")


def run(args) -> int:
    from vlbridge.ask import ask
    from vlbridge.eval.generate_answers import GenerationSettings
    from vlbridge.runs import load_model

    check_arguments(args)
    built, _ = load_model(args.run_dir, args.recipe)  # a recipe's untrained bridge is drawn from its seed
    settings = GenerationSettings(args.max_new_tokens, 1, args.sample, args.temperature, args.top_p, args.seed)
    print(ask(built, args.image, args.prompt, settings))  # one --image: an image; several: a clip
    return 0
