"""``vlbridge data``: generate the built-in Shapes dataset, or check a LLaVA JSON file."""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

HELP = "Generate the built-in Shapes dataset or validate LLaVA JSON files."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vlbridge.data.shapes_clips_dataset import ClipsConfig
    from vlbridge.data.shapes_dataset import ShapesConfig  # defaults live in one place: the config
    from vlbridge.data.shapes_export import FORMATS

    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)

    shapes = sub.add_parser("shapes", help="Generate the Shapes dataset (images, LLaVA JSON, COCO, VQAv2, "
                            "ScienceQA layouts) deterministically from a seed.",
                            description="Generate the Shapes dataset deterministically from a seed.")
    shapes.add_argument("--out", type=Path, required=True,
                        help="Output folder (new, empty, or an earlier Shapes output, which is replaced).")
    shapes.add_argument("--n", type=int, default=ShapesConfig.n,
                        help="Number of scenes (images) over all splits (default: %(default)s; 80/10/10 %% "
                        "train/val/test).")
    shapes.add_argument("--seed", type=int, default=ShapesConfig.seed,
                        help="Random seed; the same seed gives byte-identical files (default: %(default)s).")
    shapes.add_argument("--formats", default=",".join(FORMATS),
                        help="Comma-separated layouts to write besides the images (default: %(default)s).")
    shapes.add_argument("--short-per-scene", type=int, default=ShapesConfig.short_per_scene,
                        help="Short-answer questions per scene (default: %(default)s).")
    shapes.add_argument("--mc-per-scene", type=int, default=ShapesConfig.mc_per_scene,
                        help="Multiple-choice questions per scene (default: %(default)s).")
    shapes.add_argument("--image-size", type=int, default=ShapesConfig.image_size,
                        help="Image side in pixels (default: %(default)s).")
    shapes.add_argument("--clips", type=int, default=0,
                        help="Also write this many short clips (frames in which shapes move by whole cells, with "
                        "questions about motion and frames, and captions) as LLaVA JSON {split}_clip_short.json and "
                        "{split}_clip_caption.json, frames under clips/ (default: %(default)s, none).")
    shapes.add_argument("--frames", type=int, default=ClipsConfig.num_frames,
                        help="Frames per clip (default: %(default)s).")
    shapes.add_argument("--questions-per-clip", type=int, default=ClipsConfig.questions_per_clip,
                        help="Short-answer questions per clip (default: %(default)s).")
    shapes.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="Processes rendering images (default: %(default)s; the files are the same for any "
                        "number).")
    shapes.set_defaults(data_run=run_shapes)

    check = sub.add_parser("check", help="Validate LLaVA JSON files: counts, every bad record, shared ids.",
                           description="Validate LLaVA JSON files (e.g. the training and the validation file "
                           "together): print counts, every bad record (exit status 1 if any), and ids carried by "
                           "more than one record, within or across the files (a warning).")
    check.add_argument("file", type=Path, nargs="+", help="The LLaVA JSON file(s).")
    check.add_argument("--images", type=Path, default=None,
                       help="Folder the records' image paths are relative to (default: each file's folder).")
    check.add_argument("--no-image-check", action="store_true",
                       help="Do not open the images (only validate the JSON records).")
    check.add_argument("--allow-outside-images", action="store_true",
                       help="Accept image paths that leave the image folder (absolute, or climbing out with '..'); "
                       "by default they are bad records (the recipe's data.allow_outside_images).")
    check.set_defaults(data_run=run_check)


def run(args: argparse.Namespace) -> int:
    return args.data_run(args)


def run_shapes(args: argparse.Namespace) -> int:
    from vlbridge.data.shapes_clips_dataset import ClipsConfig, generate_clips
    from vlbridge.data.shapes_dataset import ShapesConfig, generate_shapes
    from vlbridge.data.shapes_export import export_shapes, parse_formats
    from vlbridge.errors import ConfigError

    formats = parse_formats(args.formats)
    config = ShapesConfig(n=args.n, seed=args.seed, image_size=args.image_size,
                          short_per_scene=args.short_per_scene, mc_per_scene=args.mc_per_scene)
    if args.clips < 0:
        raise ConfigError(f"--clips must be 0 (none) or more, got {args.clips}")
    clips = None
    if args.clips:
        clips = generate_clips(ClipsConfig(n=args.clips, num_frames=args.frames, seed=args.seed,
                                           image_size=args.image_size, questions_per_clip=args.questions_per_clip))
    start = time.perf_counter()
    manifest = export_shapes(generate_shapes(config), args.out, formats, workers=args.workers, clips=clips)
    seconds = time.perf_counter() - start
    counts = manifest["counts"]
    print(f"Shapes dataset (seed {config.seed}) written to {args.out} in {seconds:.1f} s "
          f"({', '.join(formats)})")
    for task in ("scenes", "short", "mc", "mc-text", "caption"):
        print(f"  {task:8s} " + "  ".join(f"{split} {counts[task][split]:6d}" for split in counts[task]))
    for split, baselines in manifest["majority_baselines"].items():
        print(f"  majority baseline {split:5s}: short {baselines['short']['per_type_majority_accuracy']:.3f}"
              f" (per question type), mc {baselines['mc']['accuracy']:.3f} (chance {baselines['mc']['chance']:.3f})")
    if "clips" in manifest:
        section = manifest["clips"]
        print(f"  clips of {section['config']['num_frames']} frames:")
        for task, by_split in section["counts"].items():
            print(f"  {task:12s} " + "  ".join(f"{split} {count:6d}" for split, count in by_split.items()))
        for split, baselines in section["majority_baselines"].items():
            print(f"  clip majority baseline {split:5s}: short {baselines['per_type_majority_accuracy']:.3f} "
                  "(per question type)")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from vlbridge.data.llava_json import read_llava_json
    from vlbridge.datasets.duplicate_ids import describe_duplicates, find_duplicate_ids

    parts, bad = {}, 0
    for file in args.file:
        samples = read_llava_json(file, image_root=args.images, check_images=not args.no_image_check,
                                  on_error="skip", allow_outside_images=args.allow_outside_images)
        with_image = sum(s.image is not None for s in samples)
        clips = Counter(len(s.frames) for s in samples if s.frames)
        turns = sum(len(s.turns) for s in samples)
        tasks = Counter(s.meta.get("task", "-") for s in samples)
        with_clip = f", {sum(clips.values())} clips (by frames: {dict(sorted(clips.items()))})" if clips else ""
        print(f"{file}: {len(samples)} valid records, {len(samples.skipped)} bad; "
              f"{with_image} with an image{with_clip}, {turns} turns; tasks: {dict(sorted(tasks.items()))}")
        for skipped in samples.skipped:
            print(f"  error: {skipped.message}")
        parts[str(file)] = samples
        bad += len(samples.skipped)
    if duplicates := find_duplicate_ids(parts):
        print(f"warning: {describe_duplicates(duplicates, shown=20)}")
    return 1 if bad else 0
