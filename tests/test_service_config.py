"""Service configuration: the example file, defaults, and errors that name the key."""

from __future__ import annotations

import json
import tomllib
from contextlib import nullcontext as DoesNotRaise
from pathlib import Path

import pytest

from edge.service.config import (
    MAX_VOCABULARY_WORDS,
    MAX_WORD_CHARS,
    ConfigError,
    ServiceConfig,
    bench_defaults,
    demo_config,
    load_config,
    parse_config,
    render_example_config,
    resolve_state_dir,
    to_dict,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "config" / "config.example.toml"


def test_example_file_is_generated_from_the_schema():
    assert EXAMPLE.read_text() == render_example_config(), (
        "config/config.example.toml is stale: regenerate it with "
        "`fastsam-edge serve --print-config > config/config.example.toml`"
    )


def test_example_parses_to_the_defaults():
    assert load_config(EXAMPLE) == ServiceConfig()


def test_every_key_is_documented_with_its_default():
    text = render_example_config()
    lines = text.splitlines()
    flat: dict[str, object] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and k != "controls":
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v

    walk(to_dict(ServiceConfig()), "")
    for key in flat:
        leaf = key.rsplit(".", 1)[-1]
        idx = next(i for i, line in enumerate(lines) if line.startswith(f"{leaf} = "))
        assert lines[idx - 1].startswith("# "), f"{key} has no comment"
    # optional keys (no fixed default) are shown commented out, with an example
    assert "# conf = 0.4" in text and "# iou = 0.9" in text


@pytest.mark.parametrize(
    ("data", "expectation", "needle"),
    [
        ({}, DoesNotRaise(), None),
        (
            {"trigger": {"motion": {"treshold": 3}}},
            pytest.raises(ConfigError),
            "trigger.motion.treshold: unknown key (did you mean 'trigger.motion.threshold'?)",
        ),
        (
            {"trigger": {"motion": {"threshold": "high"}}},
            pytest.raises(ConfigError),
            "trigger.motion.threshold: expected an integer in [1, 254], got 'high'",
        ),
        (
            {"trigger": {"motion": {"threshold": 300}}},
            pytest.raises(ConfigError),
            "trigger.motion.threshold",
        ),
        ({"source": {"fps": 0}}, pytest.raises(ConfigError), "source.fps"),
        (
            {"source": {"rotation": 45}},
            pytest.raises(ConfigError),
            "source.rotation: expected one of 0, 90, 180, 270, got 45",
        ),
        ({"source": {"kind": "webcam"}}, pytest.raises(ConfigError), "source.kind"),
        ({"source": {"kind": "replay"}}, pytest.raises(ConfigError), "source.path: required"),
        ({"processing": {"roi": [1, 2]}}, pytest.raises(ConfigError), "processing.roi"),
        ({"processing": {"roi": [0, 0, 10, 10]}}, DoesNotRaise(), None),
        (
            {"http": {"enabled": "yes"}},
            pytest.raises(ConfigError),
            "http.enabled: expected true or false",
        ),
        ({"http": {"port": 70000}}, pytest.raises(ConfigError), "http.port"),
        ({"mqtt": {"topic_prefix": "a/#"}}, pytest.raises(ConfigError), "mqtt.topic_prefix"),
        ({"model": {"conf": 1.5}}, pytest.raises(ConfigError), "model.conf"),
        ({"model": {"conf": 0.25}}, DoesNotRaise(), None),
        ({"output": "x"}, pytest.raises(ConfigError), "output: expected a table"),
        ({"outptu": {}}, pytest.raises(ConfigError), "did you mean 'output'"),
        (
            {"source": {"reopen_backoff_s": 10, "reopen_backoff_max_s": 5}},
            pytest.raises(ConfigError),
            "source.reopen_backoff_max_s",
        ),
        ({"service": {"log_level": "loud"}}, pytest.raises(ConfigError), "service.log_level"),
    ],
)
def test_parse_errors_name_the_key(data, expectation, needle):
    with expectation as exc:
        parse_config(data, origin="c.toml")
    if needle:
        assert needle in str(exc.value)
        assert str(exc.value).startswith("c.toml: ")


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[source\nkind = 1\n")
    with pytest.raises(ConfigError, match="TOML syntax error"):
        load_config(bad)
    good = tmp_path / "good.toml"
    good.write_text('[source]\nkind = "demo"\n[trigger.motion]\nenabled = true\n')
    cfg = load_config(good)
    assert cfg.source.kind == "demo" and cfg.trigger.motion.enabled
    assert cfg.trigger.motion.threshold == 25  # untouched keys keep their defaults


def test_replace_and_demo_config(tmp_path):
    cfg = demo_config(tmp_path, **{"trigger.motion.enabled": True})
    assert cfg.source.kind == "demo" and cfg.model.bundle == "demo"
    assert cfg.trigger.interval.enabled and cfg.trigger.interval.seconds == 0.0
    assert cfg.trigger.motion.enabled and cfg.output.dir == str(tmp_path)
    with pytest.raises(ConfigError, match="http.port"):
        cfg.replace(**{"http.port": -1})
    with pytest.raises(ConfigError, match="unknown key"):
        cfg.replace(**{"http.prot": 1})


def test_example_round_trips_through_tomllib():
    data = tomllib.loads(render_example_config())
    assert parse_config(data) == ServiceConfig()


def _bench_json(tmp_path, rec):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"recommendation": rec}))
    return str(path)


REC = {"bundle": "/b/fastsam-s-640", "input": [640, 640], "precision": "int8", "threads": 3}


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        pytest.param({}, ("int8", 3), id="fills-both"),
        pytest.param({"precision": "fp32"}, ("fp32", 3), id="explicit-precision-wins"),
        pytest.param({"threads": 1}, ("int8", 1), id="explicit-threads-wins"),
    ],
)
def test_bench_defaults_fill_unset_keys(tmp_path, model, expected):
    cfg = parse_config({"model": {**model, "defaults_from": _bench_json(tmp_path, REC)}})
    precision, threads, notes = bench_defaults(cfg.model)
    assert (precision, threads) == expected
    assert "bench recommendation" in notes[0]


def test_bench_defaults_note_other_bundle(tmp_path):
    cfg = parse_config(
        {"model": {"bundle": "/b/fastsam-s-320", "defaults_from": _bench_json(tmp_path, REC)}}
    )
    notes = bench_defaults(cfg.model)[2]
    assert len(notes) == 2 and "fastsam-s-640" in notes[1]


def test_bench_defaults_off():
    assert bench_defaults(parse_config({}).model) == ("", 0, [])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (None, "no such file"),
        ("{not json", "cannot read"),
        (json.dumps({"rows": []}), "no bench recommendation"),
        (json.dumps({"recommendation": {**REC, "threads": 0}}), "bad recommended threads"),
    ],
)
def test_bench_defaults_errors(tmp_path, content, needle):
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    cfg = parse_config({"model": {"defaults_from": str(path)}})
    with pytest.raises(ConfigError, match=needle):
        bench_defaults(cfg.model)


@pytest.mark.parametrize(
    ("value", "expectation", "result_or_needle"),
    [
        ([], DoesNotRaise(), []),  # the bundle's default vocabulary
        ([" person ", "red car", "chien d'été", "猫"], DoesNotRaise(),
         ["person", "red car", "chien d'été", "猫"]),
        (["x" * MAX_WORD_CHARS] * 1, DoesNotRaise(), ["x" * MAX_WORD_CHARS]),
        ([f"w{i}" for i in range(MAX_VOCABULARY_WORDS)], DoesNotRaise(),
         [f"w{i}" for i in range(MAX_VOCABULARY_WORDS)]),
        ("person, dog", pytest.raises(ConfigError), "processing.vocabulary: expected a list"),
        (["person", 3], pytest.raises(ConfigError), "vocabulary[1]: expected a non-empty"),
        (["person", "  "], pytest.raises(ConfigError), "vocabulary[1]: expected a non-empty"),
        (["a\nb"], pytest.raises(ConfigError), "vocabulary[0]: control characters (\\n)"),
        (["x" * (MAX_WORD_CHARS + 1)], pytest.raises(ConfigError),
         f"processing.vocabulary[0]: {MAX_WORD_CHARS + 1} characters, at most {MAX_WORD_CHARS}"),
        ([f"w{i}" for i in range(MAX_VOCABULARY_WORDS + 1)], pytest.raises(ConfigError),
         f"processing.vocabulary: {MAX_VOCABULARY_WORDS + 1} words, at most"),
        # duplicates are refused, naming both entries (the tower lowercases, collapses spaces)
        (["dog", "cat", "dog"], pytest.raises(ConfigError),
         "processing.vocabulary[2]: 'dog' repeats processing.vocabulary[0] 'dog'"),
        (["Red  Car", "red car"], pytest.raises(ConfigError),
         "processing.vocabulary[1]: 'red car' repeats processing.vocabulary[0] 'Red  Car'"),
    ],
)  # fmt: skip
def test_processing_vocabulary(value, expectation, result_or_needle):
    with expectation as exc:
        cfg = parse_config({"processing": {"vocabulary": value}}, origin="c.toml")
    if isinstance(expectation, DoesNotRaise):
        assert cfg.processing.vocabulary == result_or_needle
    else:
        assert result_or_needle in str(exc.value), str(exc.value)


def test_state_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    cfg = demo_config(tmp_path / "out")
    assert resolve_state_dir(cfg) == tmp_path / "out" / ".state"
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fastsam-edge:/var/lib/other")
    assert resolve_state_dir(cfg) == Path("/var/lib/fastsam-edge")
    explicit = cfg.replace(**{"service.state_dir": str(tmp_path / "st")})
    assert resolve_state_dir(explicit) == tmp_path / "st"
