"""LocalEngine.validate: the parameters of a LOCAL job are checked and normalised without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from offload.engines import build_engine, engine_class
from offload.engines.local import LocalEngine
from offload.errors import InvalidJobError


@pytest.fixture
def engine(tmp_path: Any) -> LocalEngine:
    return LocalEngine({"state_dir": str(tmp_path / "state")})


def test_minimal_parameters_are_normalised(engine: LocalEngine) -> None:
    assert engine.validate({"executable": "python"}) == {
        "executable": "python",
        "arguments": [],
        "environment": {},
    }


def test_numbers_become_strings_and_tuples_lists(engine: LocalEngine) -> None:
    params = engine.validate(
        {
            "executable": "python",
            "arguments": ("model.py", "--n", 3, 2.5),
            "environment": {"N": 4, "NAME": "x"},
            "other": "kept",
        }
    )
    assert params["arguments"] == ["model.py", "--n", "3", "2.5"]
    assert params["environment"] == {"N": "4", "NAME": "x"}
    assert params["other"] == "kept"


def test_shell_metacharacters_are_just_characters(engine: LocalEngine) -> None:
    args = ["$(touch /tmp/x)", "; rm -rf /", "'\"", "a\nb", "ünï ☃", "`id`", "|", "&&", "*"]
    assert engine.validate({"executable": "echo", "arguments": args})["arguments"] == args


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "executable"),
        ({"executable": ""}, "executable"),
        ({"executable": "   "}, "executable"),
        ({"executable": 5}, "executable"),
        ({"executable": "py\x00thon"}, "executable"),
        ({"executable": "python", "arguments": "model.py --n 3"}, "arguments"),
        ({"executable": "python", "arguments": {"a": 1}}, "arguments"),
        ({"executable": "python", "arguments": ["ok", None]}, "arguments[1]"),
        ({"executable": "python", "arguments": [True]}, "arguments[0]"),
        ({"executable": "python", "arguments": [["nested"]]}, "arguments[0]"),
        ({"executable": "python", "arguments": ["a", "b\x00"]}, "arguments[1]"),
        ({"executable": "python", "environment": ["A=1"]}, "environment"),
        ({"executable": "python", "environment": {"1BAD": "x"}}, "environment"),
        ({"executable": "python", "environment": {"A-B": "x"}}, "environment"),
        ({"executable": "python", "environment": {"A=B": "x"}}, "environment"),
        ({"executable": "python", "environment": {"": "x"}}, "environment"),
        ({"executable": "python", "environment": {"A": None}}, "environment.A"),
        ({"executable": "python", "environment": {"A": {"x": 1}}}, "environment.A"),
        ({"executable": "python", "environment": {"A": "x\x00"}}, "environment.A"),
    ],
)
def test_bad_parameters_name_the_field(
    engine: LocalEngine, params: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidJobError) as info:
        engine.validate(params)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert isinstance(info.value, ValueError)


def test_validate_does_no_io(tmp_path: Any) -> None:
    state = tmp_path / "state"
    engine = LocalEngine({"state_dir": str(state)})
    engine.validate({"executable": "definitely-not-a-program-xyz", "arguments": ["a"]})
    assert not state.exists()


def test_local_engine_is_registered_and_can_pause() -> None:
    assert engine_class("local") is LocalEngine
    engine = build_engine("local", {"max_jobs": 3, "state_dir": "/tmp/offload-test-unused"})
    assert isinstance(engine, LocalEngine)
    assert engine.max_jobs == 3
    assert LocalEngine.can_pause and LocalEngine.can_cancel and LocalEngine.executes
