"""vlbridge export --run RUN --format hf|bridge --out DIR"""

from __future__ import annotations

import sys

HELP = ("Export a run: as a Hugging Face model folder (LLaVA-style runs: LlavaForConditionalGeneration + processor) "
        "or as its trained tensors with a model card.")


def add_arguments(parser) -> None:
    # dest run_dir: `run` is the attribute the dispatcher stores this module's run() in
    parser.add_argument("--run", dest="run_dir", required=True, metavar="RUN",
                        help="a run folder (its final or latest checkpoint) or a checkpoint folder")
    parser.add_argument("--format", choices=["hf", "bridge"], default="hf",
                        help="hf: a folder transformers' from_pretrained loads (mlp -> input_space runs); a bridge "
                             "no Hugging Face class computes gets the bridge export, with the reason printed. "
                             "bridge: the trained tensors, recipe and a model card (also a vlbridge checkpoint)")
    parser.add_argument("--out", required=True, metavar="DIR", help="the folder to write (must not exist, or be empty)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(args) -> int:
    from vlbridge.export import export_run

    result = export_run(args.run_dir, args.out, args.format, overwrite=args.overwrite)
    if result.note:
        print(f"vlbridge export: {result.note}; wrote its trained tensors and a model card instead", file=sys.stderr)
    what = f"a Hugging Face {result.hf_class}" if result.hf_class else "the bridge's trained tensors and a model card"
    print(f"wrote {what} to {result.folder}")
    return 0
