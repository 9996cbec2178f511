"""Job templates and workspace placeholders (pure: no Django, no database)."""

from __future__ import annotations

import pytest

import offload
from offload.templates import (
    APP_WORKSPACE,
    USER_WORKSPACE,
    BasicJobTemplate,
    CondorJobTemplate,
    JobTemplate,
    LocalJobTemplate,
    substitute_workspaces,
)

APP = "/srv/ws/app1/app"
USER = "/srv/ws/app1/users/alice"


def test_placeholders() -> None:
    assert APP_WORKSPACE == "$(APP_WORKSPACE)"
    assert USER_WORKSPACE == "$(USER_WORKSPACE)"


def test_substitution_in_strings() -> None:
    assert substitute_workspaces("$(APP_WORKSPACE)/model.py", APP, USER) == f"{APP}/model.py"
    assert substitute_workspaces("$(USER_WORKSPACE)", APP, USER) == USER
    assert (
        substitute_workspaces("$(APP_WORKSPACE):$(USER_WORKSPACE):$(APP_WORKSPACE)", APP, USER)
        == f"{APP}:{USER}:{APP}"
    )
    assert substitute_workspaces("no placeholder", APP, USER) == "no placeholder"


def test_substitution_is_recursive_through_lists_tuples_and_dicts() -> None:
    value = {
        "executable": "$(APP_WORKSPACE)/run.sh",
        "arguments": ["--in", "$(USER_WORKSPACE)/in.csv", ("$(APP_WORKSPACE)", 3)],
        "nested": {"deeper": [{"path": "$(USER_WORKSPACE)/out"}], "n": 5, "f": 1.5, "b": True},
        "none": None,
    }
    result = substitute_workspaces(value, APP, USER)
    assert result == {
        "executable": f"{APP}/run.sh",
        "arguments": ["--in", f"{USER}/in.csv", (APP, 3)],
        "nested": {"deeper": [{"path": f"{USER}/out"}], "n": 5, "f": 1.5, "b": True},
        "none": None,
    }
    # Container types are kept.
    assert isinstance(result["arguments"], list)
    assert isinstance(result["arguments"][2], tuple)
    # The original is not modified.
    assert value["arguments"][1] == "$(USER_WORKSPACE)/in.csv"
    assert value["nested"]["deeper"][0]["path"] == "$(USER_WORKSPACE)/out"


def test_dict_keys_are_substituted_too() -> None:
    assert substitute_workspaces({"$(APP_WORKSPACE)": 1}, APP, USER) == {APP: 1}


def test_job_template_defaults_and_resolved_parameters() -> None:
    params = {"executable": "$(APP_WORKSPACE)/x", "arguments": ["$(USER_WORKSPACE)"]}
    template = JobTemplate("t1", "LOCAL", params)
    assert template.name == "t1"
    assert template.type == "LOCAL"
    assert template.parameters == params
    assert template.parameters is not params  # copied
    resolved = template.resolved_parameters(APP, USER)
    assert resolved == {"executable": f"{APP}/x", "arguments": [USER]}
    # Resolving does not change the template (it can be used for many jobs and users).
    assert template.parameters["executable"] == "$(APP_WORKSPACE)/x"
    assert template.resolved_parameters("/a", "/u") == {"executable": "/a/x", "arguments": ["/u"]}


def test_job_template_default_type_is_basic() -> None:
    template = JobTemplate("plain")
    assert template.type == "BASIC"
    assert template.parameters == {}


@pytest.mark.parametrize(
    ("cls", "code"),
    [(BasicJobTemplate, "BASIC"), (LocalJobTemplate, "LOCAL"), (CondorJobTemplate, "CONDORJOB")],
)
def test_typed_templates(cls: type[JobTemplate], code: str) -> None:
    template = cls("t", {"description": "d"})  # type: ignore[call-arg]
    assert template.type == code
    assert template.parameters == {"description": "d"}
    assert isinstance(template, JobTemplate)
    assert code in repr(template)


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_template_name_must_be_a_non_empty_string(name: object) -> None:
    with pytest.raises(ValueError, match="name"):
        JobTemplate(name, "BASIC")  # type: ignore[arg-type]


def test_public_api_exports_templates() -> None:
    assert offload.JobTemplate is JobTemplate
    assert offload.BasicJobTemplate is BasicJobTemplate
    assert offload.CondorJobTemplate is CondorJobTemplate
