"""`vlbridge serve` refusals at start, and the demo's closing hint that opens its runs in the browser demo."""

from __future__ import annotations

import shlex
import socket
import threading

from vlbridge.serve.served_run import load_served_runs
from vlbridge_cli.main import build_parser, main


def test_a_folder_that_is_not_a_run_stops_serve_at_start(tmp_path, serve_runs, capsys):
    (tmp_path / "notes").mkdir()
    assert main(["serve", "--run", str(serve_runs["llava"]), "--run", str(tmp_path / "notes")]) == 2
    assert f"vlbridge serve: error: {tmp_path / 'notes'} is not a run or checkpoint folder" in capsys.readouterr().err


def test_options_are_checked(serve_runs, capsys):
    assert main(["serve", "--run", str(serve_runs["llava"]), "--port", "70000"]) == 2
    assert "--port 70000 is not a port (1-65535)" in capsys.readouterr().err
    assert main(["serve", "--run", str(serve_runs["llava"]), "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens 0 must be at least 1" in capsys.readouterr().err


def test_a_port_in_use_is_named(serve_runs, capsys):
    codes = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        # in a thread with a time limit: a server that started anyway would serve forever
        serve = threading.Thread(target=lambda: codes.append(main(["serve", "--run", str(serve_runs["llava"]),
                                                                   "--port", str(port)])), daemon=True)
        serve.start()
        serve.join(timeout=180)
    printed = capsys.readouterr()
    assert codes == [2], printed
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in printed.err and "serving on" not in printed.out


def test_the_demo_ends_with_the_command_that_serves_its_runs(tmp_path, tiny_llama_dir, tiny_dinov2_dir, capsys):
    tiny = [f"model.language_model={tiny_llama_dir}", f"model.vision_encoder={tiny_dinov2_dir}", "model.vision_layer=-1"]
    args = ["demo", "--out", str(tmp_path / "demo"), "--scenes", "20", "--steps", "1", "--batch-size", "2",
            "--eval-samples", "2"]
    assert main([*args, *(item for setting in tiny for item in ("--set", setting))]) == 0
    hint = capsys.readouterr().out.rstrip().splitlines()[-2:]
    assert hint[1] == "   then open http://127.0.0.1:7860"
    command = shlex.split(hint[0])
    assert command[:2] == ["vlbridge", "serve"]
    parsed = build_parser().parse_args(command[1:])
    assert [r.name for r in load_served_runs(parsed.runs)] == ["llava", "memvp"]  # the runs the demo trained
