"""vlbridge generate --image PATH --prompt TEXT [--run RUN_DIR | --recipe RECIPE]"""

from __future__ import annotations

HELP = "Answer a prompt about an image with a trained run (or the untrained default model)."


def add_arguments(parser) -> None:
    parser.add_argument("--image", required=True, help="image file (any format Pillow reads)")
    parser.add_argument("--prompt", required=True, help="the question or instruction")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--run", dest="run_dir", help="a run folder written by vlbridge train")
    source.add_argument("--recipe", help="a recipe to build an untrained model from (default: built-in defaults)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="maximum tokens to generate")
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (with --sample)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass (with --sample)")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling")


def run(args) -> int:
    from vlbridge.ask import ask
    from vlbridge.eval.generate_answers import GenerationSettings
    from vlbridge.runs import load_model

    built, _ = load_model(args.run_dir, args.recipe)  # a recipe's untrained bridge is drawn from its seed
    settings = GenerationSettings(args.max_new_tokens, 1, args.sample, args.temperature, args.top_p, args.seed)
    print(ask(built, args.image, args.prompt, settings))
    return 0
