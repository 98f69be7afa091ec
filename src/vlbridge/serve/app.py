"""The browser demo (Gradio, as LLaVA's and TinyLLaVA's demos): an image and a question in, every run's answer
side by side with its latency, and for MemVP runs the knowledge-locating heat map over the image.

Bad input (no image, a file that is not an image, an image too large to decode safely, an empty question,
heat-map words that are not in the question) gets a message on the page; the server keeps serving.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from vlbridge.data.images import DEFAULT_MAX_PIXELS, load_image
from vlbridge.errors import VLBridgeError
from vlbridge.eval.generate_answers import GenerationSettings
from vlbridge.serve.served_run import RunAnswer, ServedRun, answer


@dataclass(frozen=True)
class Reply:
    status: str  # Markdown: an error, or which question was answered
    answers: tuple[RunAnswer | None, ...]  # one per run; None when there was no answer


def respond(runs: Sequence[ServedRun], image_path: str | None, question: str | None, words: str | None,
            settings: GenerationSettings, heat_maps: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Reply:
    """Every run's answer to ``question`` about the image file ``image_path``, or an error message and no answers.
    ``words``: space-separated words of the question to draw the heat maps of (empty: the whole question);
    heat maps are written into ``heat_maps``."""
    nothing = (None,) * len(runs)
    if not image_path:
        return Reply("**Error:** upload an image or pick an example first.", nothing)
    question = (question or "").strip()
    if not question:
        return Reply("**Error:** type a question about the image.", nothing)
    try:
        image = load_image(image_path, max_pixels=max_pixels)  # refuses non-images and decompression bombs
    except VLBridgeError as error:
        # the upload's temporary folder means nothing to the user; its file name does
        message = str(error).replace(f"{Path(image_path).parent}/", "")
        return Reply(f"**Error:** {message}", nothing)
    try:
        answers = tuple(answer(run, image_path, image, question, settings, heat_maps / f"{uuid.uuid4().hex}.png",
                               (words or "").split() or None) for run in runs)
    except VLBridgeError as error:  # e.g. heat-map words that are not in the question
        return Reply(f"**Error:** {error}", nothing)
    return Reply(f"Answered: *{question}*", answers)


def build_app(runs: Sequence[ServedRun], examples: Sequence[tuple[Path, str]], settings: GenerationSettings,
              heat_maps: Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> gr.Blocks:
    """The page: image, question (and heat-map words when a run locates), one column per run, the examples."""
    locating = any(run.locates for run in runs)
    with gr.Blocks(title="vlbridge", analytics_enabled=False) as app:
        gr.Markdown("# vlbridge\nUpload an image or pick an example below, type a question, and compare the "
                    "answers of " + ", ".join(f"**{run.name}**" for run in runs) + ".")
        with gr.Row():
            image = gr.Image(type="filepath", label="image", sources=["upload", "clipboard"], height=320,
                             elem_id="image")
            with gr.Column():
                question = gr.Textbox(label="question", placeholder="What shape is at the top left?",
                                      elem_id="question")
                words = gr.Textbox(label="heat-map words (optional, MemVP runs)", visible=locating,
                                   placeholder="e.g. color square; empty: the whole question", elem_id="words")
                button = gr.Button("Ask", variant="primary", elem_id="ask")
                status = gr.Markdown(elem_id="status")
        outputs = [status]
        with gr.Row():
            for i, run in enumerate(runs):
                with gr.Column():
                    gr.Markdown(f"### {run.name}\n`{run.pair}`")
                    outputs.append(gr.Textbox(label="answer", interactive=False, elem_id=f"answer-{i}"))
                    outputs.append(gr.Markdown(elem_id=f"latency-{i}"))
                    if run.locates:
                        outputs.append(gr.Image(label="where the question reads the image", type="filepath",
                                                interactive=False, elem_id=f"heat-{i}"))
        gr.Examples([[str(path), text] for path, text in examples], inputs=[image, question], label="examples")

        def handle(upload, question_text, words_text):
            image_path = None if upload is None else upload.get("path")
            reply = respond(runs, image_path, question_text, words_text, settings, heat_maps, max_pixels)
            values = [reply.status]
            for run, result in zip(runs, reply.answers):
                if result is None:
                    values += ["", ""]
                else:  # an empty answer (the model ended at once) would look like no answer at all
                    values += [result.text, f"answered in {result.seconds:.2f} s" + ("" if result.text else
                                                                                       " (an empty answer)")]
                if run.locates:
                    values.append(None if result is None else str(result.heat_map))
            return values

        # One question at a time (pressing Ask or Enter alike): the runs share this machine's cores. Inputs arrive
        # unprocessed: Gradio's image preprocessing opens the upload with Pillow and fails with a bare traceback
        # on a file that is not an image, while load_image says what is wrong (Gradio still checks that the path
        # is a file uploaded to this server).
        gr.on([button.click, question.submit], handle, [image, question, words], outputs, api_name="ask",
              preprocess=False, concurrency_limit=1)
    return app
