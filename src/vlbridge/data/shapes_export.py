"""Write a generated Shapes dataset as ordinary files in the standard layouts, so the same readers
that load LLaVA, COCO, VQAv2 and ScienceQA data load it.

Layout of the output folder (paths also listed in ``manifest.json``)::

    manifest.json                       seed, config, counts, majority baselines, file list
    images/shapes_000000.png ...        one 224x224 PNG per scene (VQA/COCO image_id = the number)
    {split}_{task}.json                 LLaVA JSON, task in short|mc|mc-text|caption, images relative to here
    coco/captions_{split}.json          COCO captions annotations ({"images", "annotations"})
    coco/dataset_coco.json              Karpathy split file (filepath "images", relative to here)
    vqav2/v2_OpenEnded_shapes_{split}_questions.json, vqav2/v2_shapes_{split}_annotations.json
    scienceqa/problems.json, scienceqa/pid_splits.json, scienceqa/images/{split}/{pid}/image.png

With clips (``vlbridge data shapes --clips N``; :mod:`vlbridge.data.shapes_clips_dataset`), also::

    clips/shapes_clip_000000_f0.png ... one PNG per frame of each clip
    {split}_clip_short.json, {split}_clip_caption.json   LLaVA JSON, each record's frames as a list under "image"

and a ``clips`` section in the manifest (config, counts, majority baselines, files).
Writing is deterministic: the same config gives byte-identical files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from vlbridge.data.llava_json import write_json_atomic, write_llava_json
from vlbridge.data.shapes import Scene, render_scene
from vlbridge.data.shapes_captions import N_REFERENCES
from vlbridge.data.shapes_clips_dataset import CLIP_TASKS, ClipsDataset, frame_file
from vlbridge.data.shapes_dataset import (GENERATOR_VERSION, QUESTION_ID_STRIDE, SPLITS, TASKS, VQA_ANSWERS_PER_QUESTION,
                                         ShapesDataset)
from vlbridge.errors import ConfigError, DataError

FORMATS = ("llava", "coco", "vqav2", "scienceqa")
GENERATOR_NAME = "vlbridge.shapes"
IMAGE_DIR = "images"
CLIP_DIR = "clips"  # the clips' frames
IMAGE_FILE_PATTERN = "shapes_{image_id:06d}.png"  # inside IMAGE_DIR; image_id = scene index
PARALLEL_MIN_SCENES = 200  # below this, starting worker processes costs more than it saves
PNG_COMPRESS_LEVEL = 3  # fixed, so bytes do not depend on Pillow defaults; 3: ~2x faster than 6, 20 % larger

# Everything the exporter may create; only these are removed when a folder is regenerated.
MANAGED = (["manifest.json", IMAGE_DIR, "coco", "vqav2", "scienceqa", CLIP_DIR]
           + [f"{s}_{t}.json" for s in SPLITS for t in TASKS + CLIP_TASKS])


def parse_formats(text: str | Iterable[str]) -> tuple[str, ...]:
    """"llava,coco" or a list of names -> validated tuple (unknown names list the valid ones)."""
    names = [n.strip() for n in (text.split(",") if isinstance(text, str) else text) if n.strip()]
    unknown = [n for n in names if n not in FORMATS]
    if unknown or not names:
        raise ConfigError(f"unknown or no formats {unknown or names}; valid: {list(FORMATS)}")
    return tuple(dict.fromkeys(names))


def export_shapes(dataset: ShapesDataset, out: str | Path, formats: Iterable[str] = FORMATS,
                  workers: int = 1, clips: ClipsDataset | None = None) -> dict[str, Any]:
    """Render the images and write the dataset in ``formats`` under ``out``; returns the manifest.

    ``workers`` > 1 renders images in that many processes (the files are the same either way). ``clips``, when
    given, are written beside the scenes (their frames under ``clips/``, LLaVA JSON only).
    """
    out, formats = Path(out), parse_formats(formats)
    _prepare(out)
    image_dir = out / IMAGE_DIR
    image_dir.mkdir(parents=True)
    jobs = [(item.scene, dataset.config.image_size, image_dir / f"{item.scene.id}.png") for item in dataset.scenes]
    if clips is not None:
        (out / CLIP_DIR).mkdir()
        jobs += [(item.clip.frame(t), clips.config.image_size, out / CLIP_DIR / frame_file(item.clip.id, t))
                 for item in clips.clips for t in range(item.clip.num_frames)]
    if workers > 1 and len(jobs) >= PARALLEL_MIN_SCENES:
        # "spawn": safe even when the caller has threads running (torch); each image depends only on
        # its scene, so the bytes do not depend on the number of workers.
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            list(pool.map(_render_to_file, jobs, chunksize=max(1, len(jobs) // (4 * workers))))
    else:
        for job in jobs:
            _render_to_file(job)
    files: dict[str, Any] = {"image_dir": IMAGE_DIR, "image_file_pattern": IMAGE_FILE_PATTERN}
    writers = {"llava": _write_llava, "coco": _write_coco, "vqav2": _write_vqav2, "scienceqa": _write_scienceqa}
    for name in formats:
        files[name] = writers[name](dataset, out)
    manifest = {
        "generator": GENERATOR_NAME,
        "version": GENERATOR_VERSION,
        "seed": dataset.config.seed,
        "n": dataset.config.n,
        "config": dataset.config_dict(),
        "formats": list(formats),
        "counts": _counts(dataset),
        "majority_baselines": dataset.majority_baselines(),
        "eval_scenes_also_in_train": dataset.redraw_failures,
        "files": files,
    }
    if clips is not None:
        manifest["clips"] = _write_clips(clips, out)
    write_json_atomic(manifest, out / "manifest.json", indent=1)
    return manifest


def _write_clips(clips: ClipsDataset, out: Path) -> dict[str, Any]:
    """The clips' LLaVA JSON files (frames already rendered); their section of the manifest."""
    files = {}
    for split in SPLITS:
        for task in CLIP_TASKS:
            name = f"{split}_{task}.json"
            write_llava_json(clips.samples(split, task, out / CLIP_DIR), out / name, image_root=out)
            files[f"{split}_{task}"] = name
    return {"config": clips.config_dict(), "counts": clips.counts(), "majority_baselines": clips.majority_baselines(),
            "eval_clips_also_in_train": clips.redraw_failures, "frame_dir": CLIP_DIR,
            "frame_file_pattern": "{clip_id}_f{t}.png", "files": files}


def _render_to_file(job: tuple[Scene, int, Path]) -> None:
    scene, image_size, path = job
    render_scene(scene, image_size).save(path, format="PNG", compress_level=PNG_COMPRESS_LEVEL)


def _prepare(out: Path) -> None:
    """Refuse to mix with foreign files; clear what an earlier Shapes export wrote."""
    if out.exists() and not out.is_dir():
        raise DataError("output path exists and is not a folder", file=out)
    if out.exists() and any(out.iterdir()):
        manifest = out / "manifest.json"
        try:
            ours = json.loads(manifest.read_text(encoding="utf-8")).get("generator") == GENERATOR_NAME
        except (OSError, ValueError, AttributeError):
            ours = False
        if not ours:
            raise DataError("folder is not empty and holds no Shapes manifest.json; "
                            "choose an empty or new folder", file=out)
        for name in MANAGED:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def _counts(dataset: ShapesDataset) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {"scenes": {}, "short": {}, "mc": {}, "mc-text": {}, "caption": {}}
    for split in SPLITS:
        items = dataset.split(split)
        counts["scenes"][split] = len(items)
        counts["short"][split] = sum(len(i.short) for i in items)
        counts["mc"][split] = counts["mc-text"][split] = sum(len(i.mc) for i in items)
        counts["caption"][split] = len(items)
    return counts


def _write_llava(dataset: ShapesDataset, out: Path) -> dict[str, str]:
    files = {}
    for split in SPLITS:
        for task in TASKS:
            name = f"{split}_{task}.json"
            write_llava_json(dataset.samples(split, task, out / IMAGE_DIR), out / name, image_root=out)
            files[f"{split}_{task}"] = name
    return files


def _tokens(caption: str) -> list[str]:
    # Karpathy's files store lower-cased words without punctuation.
    return re.findall(r"[a-z0-9]+", caption.lower())


def _write_coco(dataset: ShapesDataset, out: Path) -> dict[str, Any]:
    size = dataset.config.image_size
    files: dict[str, Any] = {"captions": {}, "karpathy": "coco/dataset_coco.json",
                             "image_dir": IMAGE_DIR, "karpathy_image_root": "."}
    karpathy = []
    for split in SPLITS:
        images, annotations = [], []
        for item in dataset.split(split):
            file_name = f"{item.scene.id}.png"
            images.append({"id": item.index, "file_name": file_name, "width": size, "height": size})
            sentences = []
            for k, text in enumerate(item.captions):
                sentence_id = item.index * N_REFERENCES + k
                annotations.append({"id": sentence_id, "image_id": item.index, "caption": text})
                sentences.append({"tokens": _tokens(text), "raw": text, "imgid": item.index, "sentid": sentence_id})
            karpathy.append({"filepath": IMAGE_DIR, "filename": file_name, "imgid": item.index, "split": split,
                             "sentids": [s["sentid"] for s in sentences], "sentences": sentences,
                             "cocoid": item.index})
        name = f"coco/captions_{split}.json"
        write_json_atomic({"info": _info(dataset, f"captions, {split} split"), "licenses": [],
                           "images": images, "annotations": annotations}, out / name)
        files["captions"][split] = name
    write_json_atomic({"images": karpathy, "dataset": "coco"}, out / files["karpathy"])
    return files


def _write_vqav2(dataset: ShapesDataset, out: Path) -> dict[str, Any]:
    files: dict[str, Any] = {"questions": {}, "annotations": {}, "image_dir": IMAGE_DIR,
                             "image_file_pattern": IMAGE_FILE_PATTERN}
    for split in SPLITS:
        questions, annotations = [], []
        for item in dataset.split(split):
            for k, q in enumerate(item.short):
                question_id = item.index * QUESTION_ID_STRIDE + k
                questions.append({"image_id": item.index, "question": q.text, "question_id": question_id})
                # Synthetic data has one true answer; it is given as all 10 "human" answers so the
                # official VQA accuracy is 1 for it and 0 for anything else.
                answers = [{"answer": q.answer, "answer_confidence": "yes", "answer_id": i + 1}
                           for i in range(VQA_ANSWERS_PER_QUESTION)]
                annotations.append({"question_type": q.question_type, "multiple_choice_answer": q.answer,
                                    "answers": answers, "image_id": item.index, "answer_type": q.answer_type,
                                    "question_id": question_id})
        common = {"info": _info(dataset, f"VQA, {split} split"), "license": {"name": "CC0-1.0", "url": ""},
                  "data_subtype": split}
        question_file = f"vqav2/v2_OpenEnded_shapes_{split}_questions.json"
        annotation_file = f"vqav2/v2_shapes_{split}_annotations.json"
        write_json_atomic({**common, "task_type": "Open-Ended", "data_type": "shapes", "questions": questions},
                          out / question_file)
        write_json_atomic({**common, "data_type": "shapes", "annotations": annotations}, out / annotation_file)
        files["questions"][split], files["annotations"][split] = question_file, annotation_file
    return files


def _write_scienceqa(dataset: ShapesDataset, out: Path) -> dict[str, str]:
    problems: dict[str, dict[str, Any]] = {}
    pid_splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    for item in dataset.scenes:
        source = out / IMAGE_DIR / f"{item.scene.id}.png"
        for k, mc in enumerate(item.mc):
            pid = f"{item.scene.id}_mc{k}"  # the same id as the LLaVA sample
            problems[pid] = {
                "question": mc.question.text, "choices": list(mc.choices), "answer": mc.answer_index,
                "hint": "", "image": "image.png", "task": "closed choice", "grade": "grade1",
                "subject": "natural science", "topic": "shapes", "category": mc.question.question_type,
                "skill": mc.question.question_type, "lecture": "",
                "solution": item.captions[0],  # the full scene description justifies the answer
                "split": item.split,
            }
            pid_splits[item.split].append(pid)
            _link_or_copy(source, out / "scienceqa" / "images" / item.split / pid / "image.png")
    pid_splits["trainval"] = pid_splits["train"] + pid_splits["val"]
    write_json_atomic(problems, out / "scienceqa/problems.json")
    write_json_atomic(pid_splits, out / "scienceqa/pid_splits.json")
    return {"problems": "scienceqa/problems.json", "pid_splits": "scienceqa/pid_splits.json",
            "image_root": "scienceqa/images", "image_path_pattern": "scienceqa/images/{split}/{pid}/image.png"}


def _link_or_copy(source: Path, target: Path) -> None:
    """Hard-link to save disk space (the bytes are identical); copy where links are not possible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _info(dataset: ShapesDataset, what: str) -> dict[str, Any]:
    return {"description": f"vlbridge Shapes ({what})", "version": str(GENERATOR_VERSION),
            "seed": dataset.config.seed, "n": dataset.config.n}
