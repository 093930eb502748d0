"""Prompts: the types, JSON parsing, validation (against the frame too) and the CLI's prompt flags.

Runtime-only (numpy, onnxruntime, OpenCV). What prompts select is tests/test_selection.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import pytest

from edge import InputError
from edge.cli import main
from edge.demo.scenes import generate_scene
from edge.prompts import BoxPrompt, PointPrompt, TextPrompt, parse_prompts, validate_prompt

HW = (240, 320)

# --------------------------------------------------------------------------------------------
# parse / validate
# --------------------------------------------------------------------------------------------


def test_parse_round_trip() -> None:
    doc = [
        {"type": "point", "data": [10, 20]},
        {"type": "point", "data": [[1, 2], [3.5, 4]], "label": [1, 0], "mode": "best"},
        {"type": "box", "data": [0, 0, 10, 10]},
        {"type": "box", "data": [[0, 0, 10, 10], [5, 5, 20, 30.5]]},
        {"type": "text", "data": "a red circle"},
    ]
    ps = parse_prompts(doc)
    assert [type(p) for p in ps] == [PointPrompt, PointPrompt, BoxPrompt, BoxPrompt, TextPrompt]
    assert ps[0].labels.tolist() == [1] and ps[0].mode == "reference"
    assert ps[1].points.shape == (2, 2) and ps[1].labels.tolist() == [1, 0]
    assert ps[3].xyxy.shape == (2, 4)
    assert parse_prompts([p.to_json() for p in ps]) == ps
    assert json.loads(json.dumps([p.to_json() for p in ps]))[4] == {
        "type": "text",
        "data": "a red circle",
    }
    single = parse_prompts({"type": "point", "data": [[1, 1], [2, 2]], "label": 0})
    assert single[0].labels.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"type": "circle", "data": [1, 2]}, "type"),
        ({"data": [1, 2]}, "type"),
        ("point", "prompts"),
        ([1], "prompts\\[0\\]"),
        ({"type": "point"}, "data"),
        ({"type": "point", "data": [1, 2], "labels": [1]}, "labels"),
        ({"type": "point", "data": [1, 2, 3]}, "point"),
        ({"type": "point", "data": "x"}, "point"),
        ({"type": "point", "data": [[1, 2], [3]]}, "point"),
        ({"type": "point", "data": [float("nan"), 2]}, "point\\[0\\]"),
        ({"type": "point", "data": [1, float("inf")]}, "point\\[0\\]"),
        ({"type": "point", "data": [[1, 2], [3, 4]], "label": [1]}, "label"),
        ({"type": "point", "data": [1, 2], "label": 2}, "label\\[0\\]"),
        ({"type": "point", "data": [1, 2], "label": 0.5}, "label\\[0\\]"),
        ({"type": "point", "data": [1, 2], "label": "1"}, "label\\[0\\]"),
        ({"type": "point", "data": [1, 2], "label": True}, "label\\[0\\]"),
        ({"type": "point", "data": [1, 2], "mode": "smart"}, "mode"),
        ({"type": "point", "data": []}, "point"),
        ({"type": "box", "data": [1, 2, 3]}, "box"),
        ({"type": "box", "data": [10, 10, 5, 20]}, "box\\[0\\].*inverted"),
        ({"type": "box", "data": [10, 10, 10, 20]}, "box\\[0\\]"),
        ({"type": "box", "data": [[0, 0, 5, 5], [0, 30, 5, 20]]}, "box\\[1\\]"),
        ({"type": "box", "data": [0, 0, float("nan"), 5]}, "box\\[0\\].*finite"),
        ({"type": "box", "data": []}, "box"),
        ({"type": "text", "data": ""}, "text"),
        ({"type": "text", "data": " \t\n"}, "text"),
        ({"type": "text", "data": 5}, "text"),
        ({"type": "text", "data": "x" * 1001}, "text.*1001"),
    ],
)
def test_parse_errors(doc, field: str) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=field):
        parse_prompts(doc)


def test_text_limit_is_inclusive() -> None:
    assert parse_prompts({"type": "text", "data": "x" * 1000})[0].text == "x" * 1000


@pytest.mark.parametrize(
    ("prompt", "field"),
    [
        (PointPrompt([[320, 10]], [1]), "point\\[0\\].*320"),
        (PointPrompt([[10, 240]], [1]), "point\\[0\\].*240"),
        (PointPrompt([[5, 5], [-0.5, 3]], [1, 1]), "point\\[1\\].*-0.5"),
        (PointPrompt([[5, -1]], [1]), "point\\[0\\]"),
        (BoxPrompt([[-20, -20, -1, 5]]), "box\\[0\\].*outside"),
        (BoxPrompt([[320, 0, 400, 10]]), "box\\[0\\].*outside"),
        (BoxPrompt([[0, 240, 10, 300]]), "box\\[0\\].*outside"),
        (BoxPrompt([[10.2, 10, 10.9, 20]]), "box\\[0\\].*empty"),
        (BoxPrompt([[-0.9, 10, 0, 20]]), "box\\[0\\]"),  # ends at the left border: outside
        ("a red circle", "type"),
        ({"type": "text", "data": "x"}, "type"),
    ],
)
def test_validate_against_frame(prompt, field: str) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=field):
        validate_prompt(prompt, HW)


def test_validate_accepts_edges() -> None:
    validate_prompt(PointPrompt([[0, 0], [319.9, 239.9]], [1, 0]), HW)
    validate_prompt(BoxPrompt([[-50, -50, 1, 1], [300, 200, 1000, 1000]]), HW)
    validate_prompt(TextPrompt("a cup"), HW)


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene_png(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    sc = generate_scene(101, 320, 240)
    path = tmp_path_factory.mktemp("cli") / "scene.png"
    cv2.imwrite(str(path), sc.image)
    return path, sc


def test_cli_segment_with_prompts(demo_bundle: Path, scene_png, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    img, sc = scene_png
    x1, y1, x2, y2 = sc.xyxy[0].tolist()
    prompts_file = tmp_path / "p.json"
    prompts_file.write_text(json.dumps({"type": "box", "data": sc.xyxy[1].tolist()}))
    out = tmp_path / "r.json"
    args = [
        "segment",
        str(img),
        "--bundle",
        str(demo_bundle),
        "--json",
        str(out),
        "--threads",
        "1",
    ]
    args += ["--point", f"{(x1 + x2) / 2},{(y1 + y2) / 2}", "--point", "1,1,0"]
    args += ["--box", f"{x1},{y1},{x2},{y2}", "--prompts", str(prompts_file)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert [p["type"] for p in doc["prompt"]] == ["point", "box", "box"]
    assert doc["prompt"][0]["label"] == [1, 0] and doc["prompt"][0]["mode"] == "reference"
    assert all(m["prompt_index"] in (0, 1, 2) for m in doc["masks"])
    assert "prompt" in doc["timings"] and "prompt" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--point", "abc"], "--point: expected X,Y\\[,LABEL\\], got 'abc'"),
        (["--point", "1,2,3,4"], "--point.*'1,2,3,4'"),
        (["--point", "1,2,5"], "--point: LABEL must be 0 or 1, got '1,2,5'"),
        (["--point", "1000,5"], "--point '1000,5'.*point\\[0\\]"),
        (["--point", "nan,5"], "--point 'nan,5'.*finite"),
        (["--box", "1,2,3"], "--box: expected X1,Y1,X2,Y2, got '1,2,3'"),
        (["--box", "30,30,10,10"], "--box '30,30,10,10'.*inverted"),
        (["--box", "400,0,500,10"], "--box '400,0,500,10'.*outside"),
        (["--text", "  "], "--text '  '.*text"),
        (["--text", "a cup"], "no CLIP text support"),
    ],
)
def test_cli_bad_prompt_values(
    demo_bundle: Path, detector_only_bundle: Path, scene_png, tmp_path: Path, capsys, extra, needle
) -> None:  # noqa: ANN001
    img, _ = scene_png
    bundle = detector_only_bundle if "CLIP" in needle else demo_bundle
    args = ["segment", str(img), "--bundle", str(bundle), "--json", str(tmp_path / "r.json")]
    assert main(args + extra) == 2
    err = capsys.readouterr().err
    assert re.search(needle, err), err
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("not json", "--prompts .*invalid JSON"),
        (
            '[{"type": "box", "data": [5, 5, 1, 1]}]',
            "--prompts .*prompts\\[0\\]: box\\[0\\].*inverted",
        ),
        ('[{"type": "point", "data": [5, 500]}]', "--prompts .*entry 0: point\\[0\\]"),
    ],
)
def test_cli_bad_prompts_file(
    demo_bundle: Path, scene_png, tmp_path: Path, capsys, content, needle
) -> None:  # noqa: ANN001
    img, _ = scene_png
    f = tmp_path / "p.json"
    f.write_text(content)
    args = ["segment", str(img), "--bundle", str(demo_bundle), "--json", str(tmp_path / "r.json")]
    assert main(args + ["--prompts", str(f)]) == 2
    assert re.search(needle, capsys.readouterr().err)


def test_cli_missing_prompts_file(demo_bundle: Path, scene_png, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    img, _ = scene_png
    args = ["segment", str(img), "--bundle", str(demo_bundle), "--json", str(tmp_path / "r.json")]
    assert main(args + ["--prompts", str(tmp_path / "nope.json")]) == 2
    assert re.search("--prompts '.*nope.json': cannot read", capsys.readouterr().err)


def test_check_prompts_lists_and_validates_against_the_frame() -> None:
    from edge.prompts import check_prompts

    box = BoxPrompt([0, 0, 10, 10])
    assert list(check_prompts(None, HW)) == [] and list(check_prompts([], HW)) == []
    assert list(check_prompts(box, HW)) == [box]
    assert list(check_prompts((box, TextPrompt("a cup")), HW)) == [box, TextPrompt("a cup")]
    with pytest.raises(InputError, match=r"point\[0\].*off the 320x240 frame"):
        check_prompts([box, PointPrompt([[320, 5]], [1])], HW)
    with pytest.raises(InputError, match="prompt: expected a Prompt"):
        check_prompts("a cup", HW)


def test_checked_prompts_are_not_checked_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Prompts checked for a frame size pass through check_prompts untouched (validated once
    where they enter); another size, or a plain list, is checked."""
    import edge.prompts as prompts_mod

    calls: list[object] = []
    real = prompts_mod.validate_prompt
    monkeypatch.setattr(
        prompts_mod, "validate_prompt", lambda p, hw: (calls.append(p), real(p, hw))[1]
    )
    point = PointPrompt([[5, 5]], [1])
    checked = prompts_mod.check_prompts([point], (10, 10))
    assert isinstance(checked, prompts_mod.CheckedPrompts) and len(calls) == 1
    assert prompts_mod.check_prompts(checked, (10, 10)) is checked and len(calls) == 1
    with pytest.raises(InputError, match="point"):
        prompts_mod.check_prompts(checked, (4, 4))  # another frame: checked again, and fails
    assert len(calls) == 2
