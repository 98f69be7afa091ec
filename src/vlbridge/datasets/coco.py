"""COCO captions: the official annotation JSON (``captions_val2014.json``) and Karpathy's split file
(``dataset_coco.json``). One :class:`Sample` per image, all its captions in ``meta["answers"]``; its
:attr:`Sample.position` is the image's index in the file's ``images`` list. Image paths must stay inside the image
folder unless ``allow_outside_images`` (:mod:`vlbridge.data.image_paths`)."""

from __future__ import annotations

from pathlib import Path

from vlbridge.data.image_paths import image_path
from vlbridge.data.sample import IMAGE_PLACEHOLDER, Sample, Turn
from vlbridge.datasets.json_io import load_json, require
from vlbridge.errors import DataError

CAPTION_INSTRUCTION = "Provide a one-sentence caption for the provided image."
"""User text of caption samples (ours; the instruction LLaVA-1.5 uses for short captions)."""

KARPATHY_SPLITS = ("train", "restval", "val", "test")


def _caption_sample(image_id: object, captions: list[str], image: Path | None, source: str, extra: dict,
                    position: int) -> Sample:
    return Sample(
        id=str(image_id),
        turns=(Turn("user", f"{IMAGE_PLACEHOLDER}\n{CAPTION_INSTRUCTION}"), Turn("assistant", captions[0])),
        image=image,
        source=source,
        meta={"task": "caption", "answers": list(captions), "image_id": image_id, **extra},
        position=position,
    )


def coco_caption_references(annotation_file: str | Path) -> tuple[dict[int, list[str]], dict[int, str]]:
    """(image id -> captions in file order, image id -> file name) from an official COCO caption
    annotation file. Images are in the file's ``images`` order, as ``pycocotools`` lists them."""
    data = load_json(annotation_file, dict)
    images = require(data, "images", list, file=annotation_file, where="top level")
    annotations = require(data, "annotations", list, file=annotation_file, where="top level")
    file_names: dict[int, str] = {}
    for i, image in enumerate(images):
        image_id = require(image, "id", int, file=annotation_file, where=f"images[{i}]")
        if image_id in file_names:
            raise DataError("duplicate image id", file=annotation_file, record=f"images[{i}] id {image_id}", field="id")
        file_names[image_id] = image.get("file_name", "")
        if not isinstance(file_names[image_id], str):
            raise DataError(f"must be a string, found {type(file_names[image_id]).__name__}", file=annotation_file,
                            record=f"images[{i}] id {image_id}", field="file_name")
    captions: dict[int, list[str]] = {image_id: [] for image_id in file_names}
    for i, ann in enumerate(annotations):
        where = f"annotations[{i}]"
        image_id = require(ann, "image_id", int, file=annotation_file, where=where)
        caption = require(ann, "caption", str, file=annotation_file, where=where)
        if image_id not in captions:
            raise DataError(f"image id {image_id} is not in 'images'", file=annotation_file, record=where,
                            field="image_id")
        captions[image_id].append(caption)
    empty = [image_id for image_id, caps in captions.items() if not caps]
    if empty:
        raise DataError(f"{len(empty)} images have no caption (first: {empty[:5]})", file=annotation_file,
                        field="annotations")
    return captions, file_names


def read_coco_captions(annotation_file: str | Path, image_dir: str | Path | None = None,
                       allow_outside_images: bool = False) -> list[Sample]:
    """Samples of an official COCO caption annotation file; ``image`` is ``image_dir/file_name``."""
    captions, file_names = coco_caption_references(annotation_file)
    root = Path(image_dir) if image_dir is not None else None
    samples = []
    for position, (image_id, caps) in enumerate(captions.items()):  # the images' order in the file
        name = file_names[image_id]
        image = image_path(root, name, allow_outside=allow_outside_images, file=annotation_file,
                           record=f"images[{position}] id {image_id}", field="file_name") if root and name else None
        samples.append(_caption_sample(image_id, caps, image, str(annotation_file), {"file_name": name}, position))
    return samples


def read_karpathy_split(split_file: str | Path, split: str = "test", image_root: str | Path | None = None,
                        allow_outside_images: bool = False) -> list[Sample]:
    """Samples of one split of Karpathy's ``dataset_coco.json`` (5,000 test images for COCO).

    ``split`` is one of train, restval, val, test; captions are the ``raw`` sentences (the COCO toolkit
    tokenises them itself). ``image`` is ``image_root/filepath/filename``.
    """
    if split not in KARPATHY_SPLITS:
        raise DataError(f"unknown split {split!r}; valid: {list(KARPATHY_SPLITS)}", file=split_file, field="split")
    data = load_json(split_file, dict)
    images = require(data, "images", list, file=split_file, where="top level")
    root = Path(image_root) if image_root is not None else None
    samples = []
    for i, image in enumerate(images):
        where = f"images[{i}]"
        if require(image, "split", str, file=split_file, where=where) != split:
            continue
        image_id = image.get("cocoid", image.get("imgid"))
        if image_id is None:
            raise DataError("missing field (cocoid or imgid)", file=split_file, record=where, field="cocoid")
        sentences = require(image, "sentences", list, file=split_file, where=where)
        captions = [require(s, "raw", str, file=split_file, where=f"{where}.sentences[{j}]")
                    for j, s in enumerate(sentences)]
        if not captions:
            raise DataError("image has no sentences", file=split_file, record=where, field="sentences")
        filename = require(image, "filename", str, file=split_file, where=where)
        folder = image.get("filepath", "")
        if not isinstance(folder, str):
            raise DataError(f"must be a string, found {type(folder).__name__}", file=split_file, record=where,
                            field="filepath")
        path = image_path(root, f"{folder}/{filename}" if folder else filename, allow_outside=allow_outside_images,
                          file=split_file, record=where, field="filepath/filename") if root else None
        samples.append(_caption_sample(image_id, captions, path, str(split_file),
                                       {"file_name": filename, "split": split}, position=i))
    return samples
