"""Every script answers bad input with one sentence and exit code 2, never a stack trace."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest

from tests.helpers import ROOT


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.parametrize(
    "args, message",
    [
        (["scripts/fetch_weights.py", "--out", "tests"], "tests is a folder; give --out a file name"),
        (["scripts/evaluate.py", "--index", "nope", "--data", "nope", "--out", "/tmp/x"], "has no images/ folder"),
        (["scripts/quality_gate.py", "--index", "nope", "--min", "0.5"], "No index at nope"),
        (["scripts/benchmark.py", "--index", "nope", "--data", "nope", "--out", "/tmp/x.json"], "No index at nope"),
        (["scripts/loadtest.py", "--index", "nope"], "No index at nope"),
        (["scripts/upload_latency.py", "--index", "nope"], "No index at nope"),
        (["scripts/ablate.py", "--index", "nope", "--data", "nope"], "No index at nope"),
        (["scripts/precompute.py", "--source", "./nope/x", "--out", "/tmp/o"], "Catalog source ./nope/x not found"),
    ],
)
def test_a_script_given_bad_input_says_one_sentence(args, message, real_weights, monkeypatch, capsys):
    """Run as `python scripts/x.py ...` would run it, in this process (a new interpreter for each script
    imported torch again: 4-8 s each)."""
    argv = [
        str(ROOT / args[0]),
        *args[1:],
        *(["--weights", str(real_weights)] if "fetch_weights" not in args[0] else []),
    ]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(sys, "path", [str(ROOT / "scripts"), *sys.path])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as ended:
        runpy.run_path(argv[0], run_name="__main__")
    stderr = capsys.readouterr().err
    assert ended.value.code == 2, stderr
    assert "Traceback" not in stderr and message in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_evaluate_names_a_missing_plotting_package_before_any_work(tmp_path):
    """matplotlib comes with requirements-dev.txt only: a user with requirements.txt alone hears so up front."""
    code = "import sys; sys.modules['matplotlib'] = None; sys.argv[1:] = sys.argv[2:]; import runpy; "
    code += "runpy.run_path('scripts/evaluate.py', run_name='__main__')"
    result = run_script("-c", code, "-", "--index", "nope", "--data", "nope", "--out", str(tmp_path))
    assert result.returncode == 2 and "matplotlib, which is not installed" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_model_options_default_to_the_environment_and_pass_on_only_what_is_set(monkeypatch):
    import argparse

    from recommender.cli import add_model_options, model_options

    monkeypatch.setenv("RECOMMENDER_WEIGHTS", "/w/resnet50.safetensors")
    monkeypatch.delenv("RECOMMENDER_TEXT_MODEL", raising=False)
    parser = argparse.ArgumentParser()
    add_model_options(parser)
    args = parser.parse_args([])
    assert (args.weights, args.text_model) == ("/w/resnet50.safetensors", None)
    assert model_options(args) == ["--weights", "/w/resnet50.safetensors"]
    args = parser.parse_args(["--weights", "a.pth", "--text-model", "mini"])
    assert model_options(args) == ["--weights", "a.pth", "--text-model", "mini"]
    photo_only = argparse.ArgumentParser()
    add_model_options(photo_only, text=False)
    assert model_options(photo_only.parse_args([])) == ["--weights", "/w/resnet50.safetensors"]
