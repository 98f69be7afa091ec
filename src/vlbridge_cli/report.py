"""vlbridge report: train every bridge preset and notable connector -> injection pairs on the same data for the same
steps, and write their costs and accuracies side by side (report.md, report.html, report.json, plots)."""

from __future__ import annotations

import shlex
import sys
from dataclasses import replace

HELP = ("Every bridge side by side: train each preset and notable connector -> injection pair between the same "
        "frozen LM and encoder on Shapes for the same steps, then report parameters, FLOPs, step time, latency, "
        "tokens/s, peak memory and accuracy (report.md, report.html, report.json and plots in --out).")


def add_arguments(parser) -> None:
    # light modules only: every vlbridge command builds this parser
    from vlbridge.report.bridges import DEFAULT_PAIRS
    from vlbridge.report.settings import QUICK, ReportSettings

    d = ReportSettings  # the class: its plain defaults, without resolving the registered presets
    parser.add_argument("--out", default="out/report",
                        help="folder for the data, runs, stored results and the report (default: out/report)")
    parser.add_argument("--quick", action="store_true",
                        help="a small run to check the pipeline (" + ", ".join(f"{k.replace('_', '-')} {v}"
                                                                            for k, v in QUICK.items()) + ")")
    parser.add_argument("--presets", nargs="*", metavar="PRESET",
                        help="bridge presets to run (default: every registered one, e.g. llava memvp blip2; none: "
                             "--presets alone)")
    parser.add_argument("--pairs", nargs="*", default=list(DEFAULT_PAIRS), metavar="CONNECTOR->INJECTION",
                        help=f"connector -> injection pairs to run (quote them in a shell; default: "
                             f"{' '.join(DEFAULT_PAIRS)}; none: --pairs alone)")
    # sizes default to None: the report's defaults, or --quick's, unless given
    parser.add_argument("--steps", type=int, help=f"training steps of every bridge (default {d.steps})")
    parser.add_argument("--batch-size", type=int, help=f"samples per step (default {d.batch_size})")
    parser.add_argument("--scenes", type=int,
                        help=f"Shapes scenes to generate, 10 %% of them test scenes (default {d.scenes})")
    parser.add_argument("--data", help="an existing Shapes export (vlbridge data shapes --out DIR) instead of --scenes")
    parser.add_argument("--eval-samples", type=int, help="first N test items scored per task (default 0 = all)")
    parser.add_argument("--seed", type=int, default=d.seed, help="seed of the data and of every bridge's training")
    parser.add_argument("--lm", default=d.lm, help=f"frozen language model: registry name or local folder ({d.lm})")
    parser.add_argument("--encoder", default=d.encoder,
                        help=f"frozen vision encoder: registry name or local folder ({d.encoder})")
    parser.add_argument("--tiny-lm", help="the tiny_lm connector's own LM (default: the connector's, smollm2-135m)")
    parser.add_argument("--threads", type=int, default=d.threads, metavar="N",
                        help="torch threads (default 0 = all cores); timings are only comparable on a quiet machine")
    parser.add_argument("--repeats", type=int,
                        help=f"timed repeats of latency and generation, median reported (default {d.repeats})")
    parser.add_argument("--new-tokens", type=int,
                        help=f"tokens generated per prompt for tokens/s (default {d.new_tokens})")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe override for every bridge, e.g. --set train.lr=5e-4 (repeatable)")
    parser.add_argument("--bridge-set", action="append", default=[], metavar="BRIDGE:KEY=VALUE",
                        help="recipe override for one bridge, e.g. 'perceiver->input_space:train.lr=1e-4' "
                             "(repeatable)")
    parser.add_argument("--force", action="store_true",
                        help="delete the stored results of the bridges named, and train and measure them again")


SIZES = ("steps", "batch_size", "scenes", "eval_samples", "repeats", "new_tokens")


def bridge_overrides(items: list[str]) -> dict[str, tuple[str, ...]]:
    from vlbridge.errors import ConfigError

    found: dict[str, list[str]] = {}
    for item in items:
        name, sep, setting = item.partition(":")
        if not sep or "=" not in setting:
            raise ConfigError(f"--bridge-set expects BRIDGE:KEY=VALUE, got {item!r}")
        found.setdefault(name.strip(), []).append(setting)
    return {name: tuple(values) for name, values in found.items()}


def run(args) -> int:
    from transformers.utils import logging as transformers_logging

    from vlbridge.report.runner import run_report
    from vlbridge.report.settings import ReportSettings, quick

    transformers_logging.disable_progress_bar()
    presets = {} if args.presets is None else {"presets": tuple(args.presets)}  # default: every registered one
    settings = ReportSettings(
        **presets, pairs=tuple(args.pairs), data_seed=args.seed, data=args.data, seed=args.seed,
        threads=args.threads, lm=args.lm, encoder=args.encoder, tiny_lm=args.tiny_lm,
        overrides=tuple(args.overrides), bridge_overrides=bridge_overrides(args.bridge_set))
    if args.quick:
        settings = quick(settings)
    given = {key: getattr(args, key) for key in SIZES if getattr(args, key) is not None}
    settings = replace(settings, **given)
    # the command as typed, when run as `vlbridge report ...` (not when called from Python)
    command = shlex.join(["vlbridge", *sys.argv[1:]]) if sys.argv[1:2] == ["report"] else ""
    report = run_report(settings, args.out, command=command, force=args.force)
    print(f"\nreport of {len(report['bridges'])} bridges: {args.out}/report.md, report.html, report.json "
          "and the plots beside them")
    return 0
