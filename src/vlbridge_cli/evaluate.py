"""vlbridge eval --run RUN_DIR --data FILE.json"""

from __future__ import annotations

import json
from pathlib import Path

HELP = "Evaluate a trained run (or the untrained recipe) on a LLaVA-format JSON file; writes predictions and scores."


def add_arguments(parser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a run folder (or checkpoint folder) written by vlbridge train")
    source.add_argument("--recipe", help="a recipe: evaluate its model untrained (the bridge's random init)")
    parser.add_argument("--data", required=True, help="LLaVA-format JSON with reference answers")
    parser.add_argument("--image-root", help="folder image paths are relative to (default: the JSON's folder)")
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N samples (0 = all)")
    parser.add_argument("--out", default=None, help="output JSON (default: RUN/eval-<data name>.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe key, e.g. --set eval.max_new_tokens=20")


def run(args) -> int:
    from vlbridge.batch import Collator
    from vlbridge.build import build_model
    from vlbridge.data.llava_json import read_llava_json
    from vlbridge.eval.generate_answers import GenerationSettings, generate_answers
    from vlbridge.eval.scoring import score_predictions
    from vlbridge.image_inputs import PixelImages
    from vlbridge.train.checkpoint import load_run
    from vlbridge.train.recipe import load_recipe

    if args.run:
        built, recipe = load_run(args.run, args.overrides)
    else:
        recipe = load_recipe(args.recipe, args.overrides)
        built = build_model(recipe.model)
    samples = read_llava_json(args.data, image_root=args.image_root)
    samples = list(samples[: args.limit] if args.limit else samples)
    collator = Collator(built.tokenizer, built.chat_format, PixelImages(built.model.vision_encoder.preprocess),
                        image_tokens=built.image_tokens, max_length=recipe.data.max_length,
                        truncation=recipe.data.truncation, with_answer=False)
    e = recipe.eval
    settings = GenerationSettings(e.max_new_tokens, e.batch_size, e.do_sample, e.temperature, e.top_p, recipe.train.seed)
    predictions = generate_answers(built.model, built.tokenizer, collator, samples, settings)
    scores = score_predictions(samples, predictions)
    out = Path(args.out or Path(args.run or recipe.train.output_dir) / f"eval-{Path(args.data).stem}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "data": args.data, "scores": scores, "generation": settings.to_dict(),
        "predictions": [{"id": s.id, "prediction": p, "answers": s.meta.get("answers") or [s.answer]}
                        for s, p in zip(samples, predictions)],
    }, indent=1))
    print(json.dumps(scores, indent=1))
    print(f"wrote {out}")
    return 0
