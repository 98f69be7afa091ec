"""``vlbridge eval``: run a trained run (or an untrained recipe) over a dataset; write predictions and scores.

    vlbridge eval --run RUN --data test_short.json                   # LLaVA JSON: each sample's meta.task
    vlbridge eval --run RUN --task caption --coco captions_val2014.json --images val2014/
    vlbridge eval --run RUN --task caption --karpathy dataset_coco.json --split test --images COCO_ROOT/
    vlbridge eval --run RUN --task vqa --questions Q.json --annotations A.json --images val2014/
    vlbridge eval --run RUN --task multiple-choice --scienceqa ScienceQA/ --split test
    vlbridge eval --run RUN --task multiple-choice --scienceqa ScienceQA/ --choose-by likelihood
    vlbridge eval --run RUN --task retrieval --karpathy dataset_coco.json --split test --images COCO_ROOT/

The report (``--out``, default ``RUN/eval-<task>-<data>.json``) holds the scores (with accuracy per question
and answer type where the data has them), every prediction, the prompt, the generation settings, the data
files, the model's identity and the metric version; captions and VQA answers (also the short answers of a
LLaVA JSON file) are also written in the official result format (``<report>.results.json``). A run is asked
with the prompt it was trained with unless ``--prompt`` or ``--task-prompt`` says otherwise; bad records raise
or are skipped and listed as the recipe's ``data.on_bad_record`` says. Prompts and defaults per task:
docs/evaluation.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from vlbridge.errors import ConfigError

HELP = ("Evaluate a run (or an untrained recipe) on captioning, VQA, multiple choice, retrieval or a LLaVA JSON "
        "file; writes predictions and scores as JSON.")

TASK_NAMES = ("caption", "vqa", "multiple-choice", "retrieval")  # = vlbridge.eval.tasks.TASKS (kept import-free)

# how a multiple-choice option is chosen: generated and parsed, or the most likely option text (summed or mean
# log-probability: vlbridge.eval.choice_likelihood.REDUCTIONS)
CHOOSE_BY = ("generation", "likelihood", "likelihood-mean")

# The data options each task reads; one given to a task that does not read it is an error, never ignored.
TASK_OPTIONS: dict[str | None, tuple[str, ...]] = {
    None: ("data", "images", "max_new_tokens", "choose_by"),
    "caption": ("coco", "karpathy", "split", "images", "prompt", "task_prompt", "max_new_tokens"),
    "vqa": ("questions", "annotations", "images", "image_pattern", "vqa_version", "prompt", "task_prompt",
            "max_new_tokens"),
    "multiple-choice": ("scienceqa", "split", "scienceqa_captions", "answer_convention", "prompt", "task_prompt",
                        "max_new_tokens", "choose_by"),
    "retrieval": ("coco", "karpathy", "split", "images"),
}


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    # dest run_dir: `run` is the attribute the dispatcher stores this module's run() in
    source.add_argument("--run", dest="run_dir", metavar="RUN",
                        help="a run folder (or checkpoint folder) written by vlbridge train")
    source.add_argument("--recipe", metavar="FILE",
                        help="a recipe: evaluate its model untrained (the bridge's random init)")
    parser.add_argument("--task", choices=TASK_NAMES, default=None,
                        help="caption | vqa | multiple-choice | retrieval; without it, --data FILE.json is evaluated "
                             "with each sample's own prompt and meta.task (short | mc | caption)")
    parser.add_argument("--data", metavar="FILE", help="LLaVA-format JSON with reference answers (no --task)")
    parser.add_argument("--images", "--image-root", dest="images", metavar="DIR",
                        help="image folder: --data: what its image paths are relative to (default: the JSON's "
                             "folder); --coco and vqa: the folder holding the images; --karpathy: the root its "
                             "filepath/filename entries are relative to")
    parser.add_argument("--coco", metavar="FILE",
                        help="caption/retrieval: official COCO caption annotations (captions_val2014.json)")
    parser.add_argument("--karpathy", metavar="FILE",
                        help="caption/retrieval: Karpathy's split file (dataset_coco.json)")
    parser.add_argument("--split", help="--karpathy: train | restval | val | test; --scienceqa: a split of "
                                        "pid_splits.json (default: test)")
    parser.add_argument("--questions", metavar="FILE", help="vqa: official questions JSON")
    parser.add_argument("--annotations", metavar="FILE", help="vqa: official annotations JSON (the 10 human answers)")
    parser.add_argument("--image-pattern", metavar="PATTERN",
                        help="vqa: image file name inside --images, from {image_id} (default: COCO's "
                             "'COCO_val2014_{image_id:012d}.jpg'; Shapes exports: 'shapes_{image_id:06d}.png')")
    parser.add_argument("--vqa-version", choices=["current", "2017"],
                        help="vqa: official evaluation code: current (GT-Vision-Lab/VQA today, default) or 2017 "
                             "(the code LAVIS copied)")
    parser.add_argument("--scienceqa", metavar="ROOT",
                        help="multiple-choice: ScienceQA folder (problems.json, pid_splits.json, images/)")
    parser.add_argument("--scienceqa-captions", action="store_true",
                        help="multiple-choice: add captions.json's image caption to the context (LLaVA, MemVP)")
    parser.add_argument("--answer-convention", choices=["auto", "letter", "answer_is"],
                        help="multiple-choice: how answers are parsed: a bare letter, 'The answer is X', or auto "
                             "(letter, then 'The answer is'; default)")
    parser.add_argument("--choose-by", choices=CHOOSE_BY,
                        help="multiple choice (--task multiple-choice, and --data's mc samples): generation (default: "
                             "generate, then parse the option's letter), likelihood (score each option's text as "
                             "the answer, choose the most likely: summed log-probability) or likelihood-mean (per "
                             "answer token)")
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEMPLATE",
                        help="the prompt template (fields in {braces}: vqa {question}; multiple-choice {question} "
                             "{context} {options}); default: the one the run was trained with, as its checkpoint "
                             "records it, else the task's standard prompt; recorded in the report")
    prompt.add_argument("--task-prompt", action="store_true",
                        help="use the task's standard prompt (docs/evaluation.md), not the one the run was trained "
                             "with (e.g. vqa appends 'Answer the question using a single word or phrase.')")
    parser.add_argument("--max-new-tokens", type=int, metavar="N",
                        help="generation length (default: the task's: caption 30, vqa 10, multiple-choice 10; "
                             "--data: the recipe's eval.max_new_tokens)")
    parser.add_argument("--limit", type=int, default=0, metavar="N",
                        help="evaluate only the first N items (images, questions, samples; 0 = all)")
    parser.add_argument("--out", default=None, metavar="FILE",
                        help="report JSON (default: RUN/eval-<task>-<data>.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set eval.batch_size=32 or --set data.on_bad_record=skip "
                             "(bad records: raise, the default, or skip them and list them in the report)")
    parser.add_argument("--threads", type=int, metavar="N", help=THREADS_HELP)


THREADS_HELP = ("torch threads (the recipe's train.threads; default 0 = all cores). With another CPU-bound job on "
                "the machine, all cores can make the work several times slower (a 1.2 s training step took 8-27 s): "
                "give fewer threads then, e.g. half the cores")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_options(args) -> None:
    """Each given data option must be one the task reads."""
    allowed = TASK_OPTIONS[args.task]
    given = [name for name in sorted({n for names in TASK_OPTIONS.values() for n in names})
             if getattr(args, name) not in (None, False)]
    stray = [name for name in given if name not in allowed]
    if stray:
        what = f"--task {args.task}" if args.task else "--data (no --task)"
        raise ConfigError(f"{', '.join(map(_flag, stray))} {'is' if len(stray) == 1 else 'are'} not read by {what}; "
                          f"it reads {', '.join(map(_flag, allowed))}")
    if args.limit < 0:
        raise ConfigError(f"--limit must be >= 0, got {args.limit}")
    if args.threads is not None and args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0 = all cores), got {args.threads}")
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    if args.task == "multiple-choice" and args.choose_by not in (None, "generation"):
        unread = [_flag(n) for n in ("answer_convention", "max_new_tokens") if getattr(args, n) is not None]
        if unread:
            raise ConfigError(f"{', '.join(unread)} {'is' if len(unread) == 1 else 'are'} not read with --choose-by "
                              f"{args.choose_by} (nothing is generated)")


def _need(args, *names: str) -> None:
    missing = [_flag(n) for n in names if getattr(args, n) in (None, False)]
    if missing:
        what = f"--task {args.task}" if args.task else "evaluating a LLaVA JSON file"
        raise ConfigError(f"{what} needs {' and '.join(missing)}")


def _caption_data(args, outside: dict):
    """Samples (one per image) and the data record of --coco or --karpathy."""
    from vlbridge.datasets.coco import read_coco_captions, read_karpathy_split

    if bool(args.coco) == bool(args.karpathy):
        raise ConfigError(f"--task {args.task} needs exactly one of --coco ANNOTATIONS.json or --karpathy "
                          "dataset_coco.json")
    _need(args, "images")
    if args.coco:
        if args.split:
            raise ConfigError("--split is for --karpathy (a COCO annotation file is one split)")
        samples = read_coco_captions(args.coco, image_dir=args.images, **outside)
        return samples, {"coco": args.coco, "images": args.images}, Path(args.coco).stem
    split = args.split or "test"
    samples = read_karpathy_split(args.karpathy, split, image_root=args.images, **outside)
    record = {"karpathy": args.karpathy, "split": split, "images": args.images}
    return samples, record, f"{Path(args.karpathy).stem}-{split}"


def load_data(args, on_bad_record: str = "raise", allow_outside_images: bool = False):
    """(samples, data record for the report, name for the default report file); the readers that can skip a bad
    record (LLaVA JSON, ScienceQA) do so under ``on_bad_record="skip"`` and list it in the samples' ``skipped``.
    Image paths that leave the image folder are bad records unless ``allow_outside_images`` (the run's
    ``data.allow_outside_images``, or ``--set data.allow_outside_images=true``)."""
    outside = {"allow_outside_images": allow_outside_images}
    if args.task is None:
        from vlbridge.data.llava_json import read_llava_json

        _need(args, "data")
        samples = read_llava_json(args.data, image_root=args.images, on_error=on_bad_record, **outside)
        return samples, {"data": args.data, "images": args.images}, Path(args.data).stem
    if args.task in ("caption", "retrieval"):
        return _caption_data(args, outside)
    if args.task == "vqa":
        from vlbridge.datasets.vqav2 import read_vqav2

        _need(args, "questions", "annotations", "images")
        samples = read_vqav2(args.questions, args.annotations, image_dir=args.images, image_pattern=args.image_pattern,
                             **outside)
        record = {"questions": args.questions, "annotations": args.annotations, "images": args.images,
                  "image_pattern": args.image_pattern}
        return samples, record, Path(args.questions).stem
    from vlbridge.datasets.scienceqa import read_scienceqa

    _need(args, "scienceqa")
    split = args.split or "test"
    samples = read_scienceqa(args.scienceqa, split, use_captions=args.scienceqa_captions, on_error=on_bad_record,
                             **outside)
    record = {"scienceqa": args.scienceqa, "split": split, "captions": args.scienceqa_captions}
    return samples, record, f"{Path(args.scienceqa).resolve().name}-{split}"


def overrides(args) -> list[str]:
    """``--set`` items, and ``--threads`` as the recipe key it is."""
    return [*args.overrides, *([f"train.threads={args.threads}"] if args.threads is not None else [])]


def load_recipe_and_meta(args):
    """(recipe, checkpoint meta) of --run (its checkpoint's) or --recipe (no meta), before any model is built."""
    from vlbridge.recipe import load_recipe
    from vlbridge.train.checkpoint import RECIPE, read_meta, resolve_checkpoint

    if args.run_dir is None:
        return load_recipe(args.recipe, overrides(args)), {}
    folder = resolve_checkpoint(args.run_dir)
    if not (folder / RECIPE).is_file():
        raise ConfigError(f"{folder} is not a run or checkpoint folder ({RECIPE} missing)")
    return load_recipe(folder / RECIPE, overrides(args)), read_meta(folder)


def load_model(args):
    """(built, recipe, model record) of --run or --recipe."""
    import torch

    from vlbridge.eval.report import model_description
    from vlbridge.runs import load_model as load

    built, recipe = load(args.run_dir, args.recipe, overrides(args))  # untrained from a recipe: its seed's bridge
    if recipe.train.threads > 0:
        torch.set_num_threads(recipe.train.threads)
    return built, recipe, model_description(built, recipe, run=args.run_dir, recipe_file=args.recipe)


def _collators(built, recipe):
    """(with the answer, prompt only): the collators training builds from the recipe."""
    from vlbridge.runs import image_loader, prompt_collator

    images = image_loader(built, recipe)
    return prompt_collator(built, recipe, images, with_answer=True), prompt_collator(built, recipe, images)


def _answerer(built, recipe, settings):
    from tqdm import tqdm

    from vlbridge.eval.generate_answers import generate_answers

    _, collator = _collators(built, recipe)

    def answer(samples):
        with tqdm(total=len(samples), desc="generating", unit="item", file=sys.stderr, disable=None) as bar:
            return generate_answers(built.model, built.tokenizer, collator, samples, settings, progress=bar.update)

    return answer


def _chooser(built, recipe, choose_by: str):
    """Multiple-choice samples -> the most likely option of each (``choose_by``: likelihood | likelihood-mean)."""
    from tqdm import tqdm

    from vlbridge.eval.choice_likelihood import choose_by_likelihood

    reduce = "mean" if choose_by == "likelihood-mean" else "sum"
    collator, _ = _collators(built, recipe)

    def choose(samples):
        with tqdm(total=len(samples), desc="ranking options", unit="item", file=sys.stderr, disable=None) as bar:
            return choose_by_likelihood(built.model, collator, samples, reduce, progress=bar.update)

    return choose


def _retrieve(built, recipe, samples):
    from vlbridge.eval.retrieval import (MAX_TEXT_TOKENS, evaluate_retrieval, find_embedder, text_tokenizer_for,
                                         tokenize_texts)
    from vlbridge.runs import image_loader

    embedder = find_embedder(built.model.bridge, built.spec.pair)
    tokenizer = text_tokenizer_for(built.spec.connector)
    encoder = built.model.vision_encoder
    if encoder is None:
        raise ConfigError(f"bridge {built.spec.pair!r} has no vision encoder to give image features")
    loader = image_loader(built, recipe)

    def features(chunk):  # (B, n, d_v) encoder grid, from the feature cache or the encoder
        inputs = loader(chunk)
        return inputs.grid if inputs.grid is not None else encoder(inputs.pixel_values).grid

    result = evaluate_retrieval(embedder, features, lambda texts: tokenize_texts(tokenizer, texts), samples,
                                batch_size=recipe.eval.batch_size)
    result.metric["text_tokenizer"] = {"connector": built.spec.connector, "max_length": MAX_TEXT_TOKENS}
    return result


def screen(built, recipe, samples, bad, stage: str) -> list:
    """The samples whose images load and whose prompts encode, the others left out and recorded in ``bad``
    (``data.on_bad_record=skip``): checked before generation, so a bad record never stops it halfway."""
    from vlbridge.eval.generate_answers import batched

    _, collator = _collators(built, recipe)
    return [s for chunk in batched(samples, recipe.eval.batch_size) for s in bad.keep_going(collator, chunk, stage)[1]]


def summary(result) -> dict:
    """The headline numbers printed to the terminal (the report has everything; per-type tables: :func:`tables`)."""
    s = result.scores
    if result.task == "vqa":
        headline = {k: s[k] for k in ("overall", "per_answer_type", "num_questions")}
        return headline | {"version": result.metric["version"]}
    if result.task == "multiple-choice":
        return {"accuracy": s["accuracy_rounded"], "num_unparsed": s["num_unparsed"],
                "chosen_by": result.metric["chosen_by"]}
    if result.task == "data":
        return {task: {k: v for k, v in scores.items() if k != "by_type"} for task, scores in s.items()}
    return s


def tables(result) -> str:
    """Accuracy per question and answer type as compact tables (empty when the data has no types)."""
    from vlbridge.eval.by_type import format_breakdown

    title = "by type (percent ± standard error)"
    if result.task == "data":
        parts = [format_breakdown(scores["by_type"], f"{title}, {task} questions:")
                 for task, scores in result.scores.items() if scores.get("by_type")]
        return "\n".join(parts)
    return format_breakdown(result.scores.get("by_type") or {}, f"{title}:")


def run(args) -> int:
    from vlbridge.eval.generate_answers import GenerationSettings
    from vlbridge.eval.llava_data import PER_SAMPLE_PROMPT, evaluate_llava_samples
    from vlbridge.eval.report import build_report, check_writable, write_report
    from vlbridge.eval.tasks import get_task
    from vlbridge.eval.training_prompts import META_KEY, choose_prompt
    from vlbridge.train.guards import BadRecords

    check_options(args)
    task = get_task(args.task) if args.task else None
    recipe, meta = load_recipe_and_meta(args)
    bad = BadRecords(recipe.data.on_bad_record)  # as training: raise, or skip and list
    template, prompt_source = None, None
    if args.task in ("caption", "vqa", "multiple-choice"):
        template, prompt_source = choose_prompt(args.task, args.prompt, meta.get(META_KEY, {}), args.task_prompt)
    samples, data, name = load_data(args, bad.policy, recipe.data.allow_outside_images)
    if args.limit and hasattr(samples, "head"):
        samples = samples.head(args.limit)  # with only the bad records read before the limit
    bad.add_skipped_on_read("data", getattr(samples, "skipped", []))
    samples = list(samples[: args.limit] if args.limit else samples)
    choose_by = args.choose_by or "generation"
    stem = f"eval-{args.task}-{name}" if args.task else f"eval-{name}"
    stem += f"-{choose_by}" if choose_by != "generation" else ""
    out = Path(args.out or Path(args.run_dir or recipe.train.output_dir) / f"{stem}.json")
    check_writable(out)  # before the work, so results are never computed and then lost
    print(f"prompt ({prompt_source}): {template!r}" if template is not None else
          f"prompt: {PER_SAMPLE_PROMPT}" if task is None else "prompt: none (retrieval embeds the captions)")
    built, recipe, model = load_model(args)
    if bad.policy == "skip":
        samples = screen(built, recipe, samples, bad, "evaluation")

    choose = _chooser(built, recipe, choose_by) if choose_by != "generation" else None
    if args.task == "retrieval":
        result, generation = _retrieve(built, recipe, samples), None
    elif args.task == "multiple-choice" and choose is not None:
        result, generation = task.evaluate(None, samples, template, choose=choose, chosen_by=choose_by), None
    else:
        e = recipe.eval
        max_new_tokens = args.max_new_tokens or (task.max_new_tokens if task else e.max_new_tokens)
        settings = GenerationSettings(max_new_tokens, e.batch_size, e.do_sample, e.temperature, e.top_p,
                                      recipe.train.seed)
        answer, generation = _answerer(built, recipe, settings), settings.to_dict()
        if task is None:
            result = evaluate_llava_samples(answer, samples, choose=choose, chosen_by=choose_by)
        elif args.task == "vqa":
            result = task.evaluate(answer, samples, template, version=args.vqa_version or "current")
        elif args.task == "multiple-choice":
            result = task.evaluate(answer, samples, template, convention=args.answer_convention or "auto")
        else:
            result = task.evaluate(answer, samples, template)

    report = build_report(result, data=data, model=model, generation=generation, limit=args.limit,
                          prompt_source=prompt_source, skipped_records=bad.entries)
    results_file = write_report(report, result, out)
    print(json.dumps(summary(result), indent=1))
    if table := tables(result):
        print(table)
    if bad.entries:
        print(f"{bad.summary()}\n  (all listed in the report under skipped_records)")
    print(f"wrote {out}" + (f" and {results_file}" if results_file else ""))
    return 0
