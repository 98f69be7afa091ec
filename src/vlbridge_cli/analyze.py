"""vlbridge analyze locate|distort --run RUN_DIR --image PATH --prompt TEXT [...]"""

from __future__ import annotations

HELP = "Inspect a MemVP model's memory: which image regions words read (locate), what zeroing them does (distort)."


def _common(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    # dest run_dir: `run` is the subcommand's entry point in the parsed arguments
    source.add_argument("--run", dest="run_dir", metavar="RUN_DIR",
                        help="a run or checkpoint folder written by vlbridge train (a memvp bridge)")
    source.add_argument("--recipe", help="a recipe to build an untrained model from (for trying the command)")
    parser.add_argument("--image", required=True, help="image file (any format Pillow reads)")
    parser.add_argument("--prompt", required=True, help="the question or instruction about the image")
    parser.add_argument("--tokens", nargs="+", metavar="WORD",
                        help="prompt tokens to analyse, as they read (case-insensitive); default: every prompt token")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True)
    locate = sub.add_parser("locate", help="heat map over the image of the chosen tokens' memory responses (PNG)",
                            description="Visual knowledge locating (MemVP paper): phi(<x, lam f(z_j)>) for the "
                                        "chosen prompt tokens over the image grid, averaged over the memory layers.")
    _common(locate)
    locate.add_argument("--out", default="locate.png", help="PNG file to write (default: locate.png)")
    distort = sub.add_parser("distort", help="zero the most responsive visual entries and compare the answers",
                             description="Visual knowledge distortion (MemVP paper): generate, zero the top-k "
                                         "visual memory entries the prompt responds to, generate again.")
    _common(distort)
    distort.add_argument("--top-k", type=int, default=2, help="how many visual entries to zero (paper: 2)")
    distort.add_argument("--max-new-tokens", type=int, default=32, help="maximum tokens to generate")


def _load(args):
    from vlbridge.runs import load_model

    built, _ = load_model(args.run_dir, args.recipe)  # a recipe's untrained bridge is drawn from its seed
    built.model.eval()
    return built


def run(args) -> int:
    from PIL import Image

    from vlbridge.analysis import distort, grid_shape, locate, save_overlay
    from vlbridge.ask import choose_tokens, question_batch
    from vlbridge.errors import ConfigError

    built = _load(args)
    if built.model.bridge.features != "grid":
        raise ConfigError("the analyses need a memvp bridge on grid features (this one uses pooled features)")
    try:
        batch, columns = question_batch(built, args.image, args.prompt)
        positions, labels = choose_tokens(built.tokenizer, batch, columns, args.tokens)
        if args.analysis == "locate":
            responses = locate(built.model, batch, positions)  # (T, n)
            rows, cols = grid_shape(responses.shape[1])
            with Image.open(args.image) as image:
                path = save_overlay(image, responses, labels, args.out)
            print(f"{path}: {len(labels)} token(s) over a {rows}x{cols} grid: {' '.join(labels)}")
            return 0
        tokenizer = built.tokenizer
        end = built.chat_format.assistant_end
        eos = tokenizer.convert_tokens_to_ids(end) if end in tokenizer.get_vocab() else tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        result = distort(built.model, batch, args.top_k, positions, max_new_tokens=args.max_new_tokens,
                         eos_token_id=eos, pad_token_id=pad)
    except ValueError as error:  # a bridge or prompt the analyses cannot take
        raise ConfigError(str(error)) from None
    rows, cols = grid_shape(result.responses.numel())
    cells = ", ".join(f"({j // cols},{j % cols})" for j in result.zeroed)
    print(f"zeroed visual entries (row,col of the {rows}x{cols} grid): {cells}")
    print(f"original : {tokenizer.decode(result.original, skip_special_tokens=True).strip()}")
    print(f"distorted: {tokenizer.decode(result.distorted, skip_special_tokens=True).strip()}")
    print("the answer changed" if result.changed else "the answer did not change")
    return 0
