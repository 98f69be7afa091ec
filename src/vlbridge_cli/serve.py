"""vlbridge serve --run RUN_DIR [--run RUN_DIR ...] [--host HOST] [--port PORT]"""

from __future__ import annotations

HELP = "Browser demo: ask trained runs about an image, answers side by side with latency (and MemVP heat maps)."


def add_arguments(parser) -> None:
    # dest runs: `run` is the subcommand's entry point in the parsed arguments
    parser.add_argument("--run", dest="runs", action="append", required=True, metavar="RUN_DIR",
                        help="a run or checkpoint folder written by vlbridge train; repeat to compare runs side by side")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0: every network)")
    parser.add_argument("--port", type=int, default=7860, help="port to listen on (default: 7860, Gradio's)")
    parser.add_argument("--max-new-tokens", type=int, default=32, help="maximum tokens per answer (greedy decoding)")


def run(args) -> int:
    import tempfile
    from pathlib import Path

    from transformers.utils import logging as transformers_logging

    from vlbridge.errors import ConfigError
    from vlbridge.eval.generate_answers import GenerationSettings
    from vlbridge.serve.app import build_app
    from vlbridge.serve.examples import photo_examples, shapes_examples
    from vlbridge.serve.served_run import load_served_runs
    from vlbridge_cli.demo import PHOTO_QUESTIONS

    if not 1 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a port (1-65535)")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {args.max_new_tokens} must be at least 1")
    transformers_logging.disable_progress_bar()  # one bar per weight load would bury the address to open
    runs = load_served_runs(args.runs)  # a folder that is not a run stops here, before anything listens
    settings = GenerationSettings(max_new_tokens=args.max_new_tokens, batch_size=1)
    with tempfile.TemporaryDirectory(prefix="vlbridge-serve-") as work:
        work = Path(work)
        examples = shapes_examples(work / "examples")
        photos = photo_examples(work / "examples", PHOTO_QUESTIONS)
        if not photos:
            print("scikit-image is not installed: the examples are Shapes scenes only")
        (work / "heat_maps").mkdir()
        app = build_app(runs, examples + photos, settings, work / "heat_maps")
        for r in runs:
            print(f"run {r.name}: {r.folder} ({r.pair}{', heat maps' if r.locates else ''})")
        try:
            app.launch(server_name=args.host, server_port=args.port, allowed_paths=[str(work)], show_error=True,
                       quiet=True, ssr_mode=False, prevent_thread_lock=True)
        except OSError:  # Gradio's message names its own parameters, not this command's options
            raise ConfigError(f"cannot listen on {args.host}:{args.port}: the port is in use or the address is "
                              "not this machine's; choose another --port or --host") from None
        print(f"serving on http://{args.host}:{args.port} : open it in a browser (Ctrl+C stops)", flush=True)
        app.block_thread()
    return 0
