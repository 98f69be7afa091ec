"""The browser demo in a real browser: `vlbridge serve` on localhost with a tiny LLaVA-style run and a tiny MemVP
run, driven by headless Chromium (Debian's package, which scripts/setup.sh installs) through Playwright."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time

import httpx
import pytest
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from vlbridge.serve.examples import shapes_examples
from vlbridge_cli.main import main

CHROMIUM = "/usr/bin/chromium"  # Debian's chromium: nothing is downloaded at run time
MAX_NEW_TOKENS = "6"
ANSWER_WAIT_MS = 60_000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """A `vlbridge serve` process; :meth:`address` waits until it listens."""

    def __init__(self, command: list[str], port: int, log):
        self.port, self.log = port, log
        with open(log, "w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)

    def address(self) -> str:
        deadline = time.monotonic() + 180
        while "serving on" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vlbridge serve did not start:\n{self.log.read_text()}")
            time.sleep(0.2)
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def server(serve_runs, tmp_path_factory):
    """`vlbridge serve` with both runs, starting (tests compute what they expect while it loads)."""
    port = free_port()
    command = [sys.executable, "-m", "vlbridge_cli.main", "serve", "--run", str(serve_runs["llava"]),
               "--run", str(serve_runs["memvp"]), "--port", str(port), "--max-new-tokens", MAX_NEW_TOKENS]
    started = Server(command, port, tmp_path_factory.mktemp("server") / "server.log")
    yield started
    started.stop()


def generated(run, image, prompt, capsys) -> str:
    """What `vlbridge generate` answers with ``run`` for ``image`` and ``prompt``."""
    capsys.readouterr()
    assert main(["generate", "--run", str(run), "--image", str(image), "--prompt", prompt,
                 "--max-new-tokens", MAX_NEW_TOKENS]) == 0
    return capsys.readouterr().out.removesuffix("\n")


def expect_answers(page, question, answers):
    """The runs' ``answers`` on the page, each with its latency; only the MemVP run (the second) has a heat map."""
    expect(page.locator("#status")).to_have_text(f"Answered: {question}", timeout=ANSWER_WAIT_MS)
    for i, expected in enumerate(answers):
        assert page.locator(f"#answer-{i} textarea").input_value() == expected
        assert re.fullmatch(r"answered in \d+\.\d\d s", page.locator(f"#latency-{i}").inner_text())
    assert page.locator("#heat-0").count() == 0
    expect(page.locator("#heat-1 img")).to_be_visible()


def expect_error(page, message):
    expect(page.locator("#status")).to_contain_text(message, timeout=ANSWER_WAIT_MS)
    assert page.locator("#status").inner_text().startswith("Error: ")
    for i in range(2):  # no answer is left over from an earlier question
        assert page.locator(f"#answer-{i} textarea").input_value() == ""


def ask(page, question, words=""):
    page.locator("#question textarea").fill(question)
    page.locator("#words textarea").fill(words)
    page.locator("#ask").click()


def upload(page, path):
    page.locator("#image input[type=file]").set_input_files(path)


def test_the_page_answers_like_generate_and_survives_bad_input(server, serve_runs, photo, tmp_path, capsys):
    runs = (serve_runs["llava"], serve_runs["memvp"])
    question = "What color is the corner?"
    not_an_image = tmp_path / "fake.png"
    not_an_image.write_text("not an image")
    text_file = tmp_path / "notes.txt"
    text_file.write_text("not an image")
    huge = tmp_path / "huge.png"
    Image.new("1", (10_000, 10_000), 1).save(huge)  # 1 bit per pixel: a small file claiming 100 megapixels
    example_image, example_question = shapes_examples(tmp_path / "examples", count=1)[0]  # as the server renders it
    # what `vlbridge generate` answers, computed while the server starts
    expected = [generated(run, photo, question, capsys) for run in runs]
    expected_example = [generated(run, example_image, example_question, capsys) for run in runs]
    assert all(expected + expected_example) and expected != expected_example  # answers that tell inputs apart
    address = server.address()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(address)

        ask(page, question)  # before any image
        expect_error(page, "upload an image or pick an example first")

        upload(page, photo)
        ask(page, question)
        expect_answers(page, question, expected)
        page.screenshot(path=tmp_path / "answered.png", full_page=True)

        ask(page, "   ")
        expect_error(page, "type a question about the image")

        ask(page, question, words="shape")
        expect_error(page, "words ['shape'] are not tokens of the prompt")

        upload(page, not_an_image)
        ask(page, question)
        expect_error(page, "file fake.png: cannot read image")

        upload(page, text_file)  # refused by the browser page itself, before it reaches the server
        expect(page.get_by_text("Invalid file type: notes.txt")).to_be_visible()

        upload(page, huge)
        ask(page, question)
        expect_error(page, "file huge.png: image is 10000x10000 = 100000000 pixels")
        page.screenshot(path=tmp_path / "refused.png", full_page=True)

        # still serving: an example picked from the page, asked with Enter
        page.get_by_text(example_question, exact=True).click()
        expect(page.locator("#question textarea")).to_have_value(example_question)
        page.locator("#words textarea").fill("")
        page.locator("#question textarea").press("Enter")
        expect_answers(page, example_question, expected_example)
        browser.close()

    assert server.process.poll() is None
    for name in ("answered.png", "refused.png"):
        with Image.open(tmp_path / name) as screenshot:
            assert screenshot.format == "PNG" and screenshot.width == 1280


def test_the_server_refuses_a_path_that_was_not_uploaded(server, photo):
    """Inputs reach the handler unprocessed; Gradio must still refuse to read files the browser did not upload."""
    reply = httpx.post(f"{server.address()}/gradio_api/call/ask", json={"data": [
        {"path": str(photo), "meta": {"_type": "gradio.FileData"}}, "What color is it?", ""]})
    result = httpx.get(f"{server.address()}/gradio_api/call/ask/{reply.json()['event_id']}", timeout=60)
    assert "event: error" in result.text and "not uploaded by a user" in result.text
    assert "Answered" not in result.text
