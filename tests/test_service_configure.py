"""edge/service/configure.py: the first-run config is raw UTF-8 and is read back before
``configure`` says it is written (issue 23); its other behaviour is tested with the Pi path in
tests/test_pi_path.py."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

import edge.service.configure as configure
from edge.cli import main
from edge.service.config import load_config, toml_string


@pytest.mark.parametrize(
    "value",
    ["", "plain", 'a "quoted" word', "back\\slash", "é ü ß", "📷 🐶 (above U+FFFF)", "del\x7f",
     "nul\x00 bell\x07 esc\x1b", "tab\tnew\nline\r"],
)  # fmt: skip
def test_toml_string_round_trips_through_tomllib(value):
    text = toml_string(value)
    assert tomllib.loads(f"v = {text}")["v"] == value
    assert "\\ud8" not in text.lower()  # never a surrogate escape


def test_toml_string_refuses_a_lone_surrogate():
    with pytest.raises(ValueError, match="lone surrogate"):
        toml_string("/data/\udcff")


@pytest.mark.parametrize("path", ["/data/📷/frames", "/data/café", '/data/"x"\\y'])
def test_configure_writes_raw_utf8_the_service_reads(tmp_path, capsys, path):
    config = tmp_path / "config.toml"
    argv = ["configure", "--config", str(config), "--source", "replay", "--source-path", path]
    assert main(argv) == 0
    assert "written" in capsys.readouterr().out
    raw = config.read_bytes()
    if not path.isascii():
        assert path.encode("utf-8") in raw  # raw UTF-8, not escapes
    assert load_config(config).source.path == path


def test_configure_refuses_undecodable_arguments(tmp_path, capsys):
    config = tmp_path / "config.toml"
    argv = ["configure", "--config", str(config), "--source", "replay"]
    assert main([*argv, "--source-path", "/data/\udcff"]) == 2  # bytes 0xff from the shell
    assert "UTF-8" in capsys.readouterr().err and not config.exists()


def test_configure_says_written_only_after_reading_the_file_back(tmp_path, capsys, monkeypatch):
    real = configure.write_config

    def surrogate_escapes(path: Path, text: str, force: bool) -> str:
        # what json.dumps wrote before: a pair TOML rejects
        return real(path, text.replace("📷", "\\ud83d\\udcf7"), force)

    monkeypatch.setattr(configure, "write_config", surrogate_escapes)
    config = tmp_path / "config.toml"
    argv = ["configure", "--config", str(config), "--source", "replay"]
    assert main([*argv, "--source-path", "/data/📷"]) == 2
    out, err = capsys.readouterr()
    assert "written" not in out and "does not parse as TOML" in err


def test_the_first_run_config_says_how_to_make_a_token():
    text = configure.render_config(configure.first_run_settings("demo"), "interval")
    assert "openssl rand -hex 16" in text and "token_file" in text


def _yoloe_bundle(tmp_path: Path, demo_bundle: Path) -> Path:
    """A copy of the demo bundle whose bundle.json says YOLOE (enough for configure)."""
    import json
    import shutil

    from edge.bundle import MANIFEST_NAME

    dest = tmp_path / "yoloe-bundle"
    shutil.copytree(demo_bundle, dest)
    doc = json.loads((dest / MANIFEST_NAME).read_text())
    doc["yoloe"] = {"family": "11", "end2end": False, "box_format": "xywh",
                    "embed_dim": 16, "strides": [8, 16, 32], "head": "yoloe_head.npz",
                    "vocabulary": {}}  # fmt: skip
    (dest / MANIFEST_NAME).write_text(json.dumps(doc))
    return dest


def test_configure_vocab_for_yoloe_bundles_only(tmp_path, capsys, demo_bundle):
    config = tmp_path / "config.toml"
    bundle = _yoloe_bundle(tmp_path, demo_bundle)
    argv = ["configure", "--config", str(config), "--source", "demo", "--bundle", str(bundle)]
    assert main([*argv, "--vocab", " person, red car,, chat noir "]) == 0
    assert load_config(config).processing.vocabulary == ["person", "red car", "chat noir"]
    assert main([*argv, "--vocab", "dog,Dog", "--force"]) == 2  # the config's own validator
    assert "processing.vocabulary[1]: 'Dog' repeats" in capsys.readouterr().err
    fastsam = ["configure", "--config", str(tmp_path / "c2.toml"), "--bundle", "demo"]
    assert main([*fastsam, "--vocab", "dog"]) == 2
    err = capsys.readouterr().err
    assert "--vocab: the bundle 'demo' is FastSAM" in err and not (tmp_path / "c2.toml").exists()
