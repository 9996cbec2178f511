"""JobManager: create_job, templates, list_jobs, get_job and the status callback URL, on the real DB."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test.utils import CaptureQueriesContext

from offload import JOB_TYPES, BasicJob, Job, JobManager, LocalJob, get_job_manager
from offload.errors import InvalidJobError, TemplateNotFoundError
from offload.templates import BasicJobTemplate, JobTemplate, LocalJobTemplate

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


class FakeApp:
    package = "fake_app"


# -- JobManager and get_job_manager -----------------------------------------------------------
def test_manager_from_label_or_object_with_package() -> None:
    assert JobManager("my_app").label == "my_app"
    assert JobManager(FakeApp()).label == "fake_app"
    assert JobManager(FakeApp).label == "fake_app"


@pytest.mark.parametrize("app", [None, 3, "", object(), "../escape", "a/b"])
def test_manager_rejects_bad_app(app: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        JobManager(app)


def test_get_job_manager() -> None:
    manager = get_job_manager("gm_app")
    assert isinstance(manager, JobManager)
    assert manager.label == "gm_app"
    assert get_job_manager("gm_app") is manager
    assert get_job_manager(FakeApp()).label == "fake_app"


# -- create_job -------------------------------------------------------------------------------
def test_create_job_returns_an_unsaved_typed_job(user: Any) -> None:
    manager = JobManager("app1")
    job = manager.create_job("first", user, job_type="LOCAL", executable="python")
    assert isinstance(job, LocalJob)
    assert job.pk is None
    assert job._state.adding
    assert Job.objects.count() == 0
    assert job.label == "app1"
    assert job.user == user
    assert job.type == "LocalJob"
    assert job.status == "Pending"
    assert job.executable == "python"
    job.save()
    assert job.pk is not None
    assert Job.objects.count() == 1
    loaded = Job.objects.get(pk=job.pk)
    assert type(loaded) is LocalJob
    assert loaded.executable == "python"


def test_default_job_type_is_basic(user: Any) -> None:
    job = JobManager("app1").create_job("j", user)
    assert type(job) is BasicJob
    assert job.job_type == "BASIC"


@pytest.mark.parametrize("code", ["BASIC", "LOCAL", "basic", "local"])
def test_job_type_codes(user: Any, code: str) -> None:
    job = JobManager("app1").create_job("j", user, job_type=code)
    assert type(job) is JOB_TYPES[code.upper()]


def test_unknown_job_type_lists_the_valid_ones(user: Any) -> None:
    with pytest.raises(ValueError, match="NOPE") as info:
        JobManager("app1").create_job("j", user, job_type="NOPE")
    message = str(info.value)
    for code in JOB_TYPES:
        assert code in message


def test_job_class_as_job_type(user: Any) -> None:
    job = JobManager("app1").create_job("j", user, job_type=LocalJob, executable="true")
    assert type(job) is LocalJob
    assert job.job_type == "LOCAL"


def test_unknown_kwarg_raises_type_error_naming_it(user: Any) -> None:
    with pytest.raises(TypeError, match="colour"):
        JobManager("app1").create_job("j", user, colour="blue")
    # A LOCAL-only attribute is unknown on a BASIC job.
    with pytest.raises(TypeError, match="executable"):
        JobManager("app1").create_job("j", user, job_type="BASIC", executable="python")


def test_any_job_attribute_can_be_passed(user: Any, tmp_path: Path) -> None:
    job = JobManager("app1").create_job(
        "j",
        user,
        job_type="LOCAL",
        description="a description",
        workspace=str(tmp_path / "mine"),
        extended_properties={"k": [1, 2]},
        executable="python",
        arguments=["model.py", "--n", "3"],
        environment={"N": "3"},
    )
    job.save()
    loaded = Job.objects.get(pk=job.pk)
    assert loaded.description == "a description"
    assert loaded.workspace == str(tmp_path / "mine")
    assert loaded.extended_properties == {"k": [1, 2]}
    assert loaded.arguments == ["model.py", "--n", "3"]
    assert loaded.environment == {"N": "3"}


@pytest.mark.parametrize("name", ["", "   ", None])
def test_name_is_required(user: Any, name: Any) -> None:
    with pytest.raises(InvalidJobError) as info:
        JobManager("app1").create_job(name, user)
    assert info.value.field == "name"


@pytest.mark.parametrize("job_type", sorted(JOB_TYPES))
def test_id_placeholder_in_name_is_replaced_on_save(user: Any, job_type: str) -> None:
    """For every job type (their parameters are checked at execute, not here)."""
    extra = {"executable": "true"} if job_type == "LOCAL" else {}
    job = JobManager("app1").create_job("run {id} of {id}", user, job_type=job_type, **extra)
    assert job.name == "run {id} of {id}"
    job.save()
    assert job.name == f"run {job.pk} of {job.pk}"
    assert Job.objects.get(pk=job.pk).name == f"run {job.pk} of {job.pk}"


def test_create_and_save_writes_job_and_event_in_one_statement_on_postgres(
    user: Any, offload_home: Path
) -> None:
    """PostgreSQL: id, {id} name, default workspace and creation event in one statement; the
    result is exactly what the general path writes (the second job goes through it)."""
    manager = JobManager("app1")
    job = manager.create_job("one {id}", user, description="d", extended_properties={"k": [1]})
    with CaptureQueriesContext(connection) as queries:
        job.save()
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    if connection.vendor == "postgresql":
        assert len(statements) == 1
    else:
        assert len(statements) <= 3
    general = manager.create_job("one {id}", user, description="d", extended_properties={"k": [1]})
    general.save(force_insert=True, using="default")  # an option: the general path
    for made in (job, general):
        stored = Job.objects.get(pk=made.pk)
        assert stored.name == made.name == f"one {made.pk}"
        assert stored.workspace == made.workspace
        assert made.workspace.endswith(os.path.join("jobs", str(made.pk)))
        assert stored.owns_workspace and made.owns_workspace
        assert stored.extended_properties == {"k": [1]}
        assert not made._state.adding
        events = list(stored.events)
        assert [(e.from_status, e.to_status, e.message) for e in events] == [("", "PEN", "created")]
    assert general.pk == job.pk + 1
    job.description = "changed"
    job.save()
    assert Job.objects.get(pk=job.pk).description == "changed"


def test_creating_jobs_one_at_a_time_uses_a_prepared_statement_on_postgres(
    user: Any, offload_home: Path
) -> None:
    """The one-statement insert binds its parameters on the server, so psycopg prepares it after
    a few runs; the jobs it writes are the same either way (names with and without {id}, given
    and default workspaces, empty and JSON values)."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are a PostgreSQL matter")
    manager = JobManager("app1")
    made = []
    for i in range(30):  # psycopg prepares a statement on its 5th run
        job = manager.create_job(
            "named {id}" if i % 2 else "plain",
            user,
            workspace="" if i % 3 else str(offload_home / f"given-{i}"),
            description="" if i == 5 else f"job {i}",
            extended_properties={"i": i, "nested": {"list": [i, None]}},
        )
        job.save()
        made.append(job)
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        prepared = [row[0] for row in cursor.fetchall()]
    assert any("pg_get_serial_sequence" in text for text in prepared), prepared
    for i, job in enumerate(made):
        stored = Job.objects.get(pk=job.pk)
        assert stored.name == (f"named {job.pk}" if i % 2 else "plain")
        assert stored.workspace == job.workspace
        assert stored.owns_workspace == bool(i % 3)
        assert stored.description == ("" if i == 5 else f"job {i}")
        assert stored.extended_properties == {"i": i, "nested": {"list": [i, None]}}
        assert [e.to_status for e in stored.events] == ["PEN"]


def test_save_signal_receivers_still_hear_new_jobs(user: Any) -> None:
    from django.db.models.signals import post_save

    heard: list[tuple[Any, bool]] = []

    def receiver(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        heard.append((instance.pk, created))

    post_save.connect(receiver, sender=BasicJob)
    try:
        job = JobManager("app1").create_job("signalled {id}", user)
        job.save()
    finally:
        post_save.disconnect(receiver, sender=BasicJob)
    assert heard == [(job.pk, True)]
    assert Job.objects.get(pk=job.pk).name == f"signalled {job.pk}"


def test_id_placeholder_is_replaced_by_execute_and_bulk_create(user: Any) -> None:
    manager = JobManager("app1")
    job = manager.create_job("exec {id}", user, job_type="LOCAL", executable="true")
    job.execute()
    assert Job.objects.get(pk=job.pk).name == f"exec {job.pk}"
    created = manager.bulk_create([manager.create_job("bulk {id}", user) for _ in range(3)])
    for j in created:
        assert Job.objects.get(pk=j.pk).name == f"bulk {j.pk}"


def test_groups_one_many_names_and_objects(user: Any) -> None:
    g1 = Group.objects.create(name="g1")
    g2 = Group.objects.create(name="g2")
    manager = JobManager("app1")
    cases: list[tuple[Any, set[str]]] = [
        (g1, {"g1"}),
        ("g2", {"g2"}),
        ([g1, g2], {"g1", "g2"}),
        (["g1", "g2"], {"g1", "g2"}),
        ((g1, "g2"), {"g1", "g2"}),
        ({g2}, {"g2"}),
    ]
    for groups, expected in cases:
        job = manager.create_job("j", user, groups=groups)
        job.save()
        assert {g.name for g in Job.objects.get(pk=job.pk).groups.all()} == expected, groups


def test_unknown_group_name_is_refused(user: Any) -> None:
    with pytest.raises(ValueError, match="nosuchgroup"):
        JobManager("app1").create_job("j", user, groups="nosuchgroup")


def test_default_workspace_is_the_jobs_own_folder(user: Any, offload_home: Path) -> None:
    manager = JobManager("app1")
    job = manager.create_job("j", user, job_type="LOCAL", executable="true")
    job.save()
    user_ws = Path(manager.get_user_workspace(user))
    assert Path(job.workspace) == user_ws / "jobs" / str(job.pk)
    assert Path(job.workspace) != user_ws
    assert Path(job.workspace).is_relative_to(offload_home)
    other = manager.create_job("k", user)
    other.save()
    assert other.workspace != job.workspace
    assert Job.objects.get(pk=job.pk).workspace == job.workspace


def test_user_and_app_workspaces(user: Any, offload_home: Path) -> None:
    manager = JobManager("app1")
    app_ws = Path(manager.app_workspace)
    user_ws = Path(manager.get_user_workspace(user))
    assert app_ws.is_absolute() and user_ws.is_absolute()
    assert app_ws.is_relative_to(offload_home)
    assert user_ws.is_relative_to(offload_home)
    assert "alice" in user_ws.parts
    assert app_ws != user_ws


# -- templates --------------------------------------------------------------------------------
def test_templates_registered_and_resolved(user: Any) -> None:
    template = JobTemplate(
        "model",
        "LOCAL",
        {
            "executable": "$(APP_WORKSPACE)/run.sh",
            "arguments": ["--out", "$(USER_WORKSPACE)/out", ("$(APP_WORKSPACE)",)],
            "environment": {"DATA": "$(USER_WORKSPACE)/data"},
            "extended_properties": {"paths": [{"p": "$(APP_WORKSPACE)/x"}]},
            "description": "from a template",
        },
    )
    manager = JobManager("tmpl_app", templates=[template])
    assert manager.job_templates == {"model": template}
    job = manager.create_job("t", user, template_name="model")
    assert isinstance(job, LocalJob)
    app_ws = manager.app_workspace
    user_ws = manager.get_user_workspace(user)
    assert os.path.isabs(app_ws) and os.path.isabs(user_ws)
    assert job.executable == f"{app_ws}/run.sh"
    assert job.arguments == ["--out", f"{user_ws}/out", (app_ws,)]
    assert job.environment == {"DATA": f"{user_ws}/data"}
    assert job.extended_properties == {"paths": [{"p": f"{app_ws}/x"}]}
    assert job.description == "from a template"
    # The template itself keeps its placeholders.
    assert template.parameters["executable"] == "$(APP_WORKSPACE)/run.sh"


def test_register_template_and_kwargs_override_template_parameters(user: Any) -> None:
    manager = JobManager("tmpl_app2")
    manager.register_template(
        LocalJobTemplate("t", {"executable": "python", "arguments": ["a"], "description": "d"})
    )
    manager.register_template(BasicJobTemplate("b", {"description": "basic"}))
    job = manager.create_job("x", user, template_name="t", arguments=["b", "c"])
    assert job.executable == "python"
    assert job.arguments == ["b", "c"]
    assert job.description == "d"
    assert type(manager.create_job("y", user, template_name="b")) is BasicJob
    with pytest.raises(TypeError):
        manager.register_template({"name": "not a template"})  # type: ignore[arg-type]


def test_missing_template(user: Any) -> None:
    manager = JobManager("tmpl_app3", templates=[BasicJobTemplate("exists")])
    with pytest.raises(TemplateNotFoundError) as info:
        manager.create_job("x", user, template_name="missing")
    assert "missing" in str(info.value)
    assert "exists" in str(info.value)
    assert info.value.name == "missing"


# -- list_jobs --------------------------------------------------------------------------------
def _make(manager: JobManager, user: Any, n: int, **kwargs: Any) -> list[Job]:
    jobs = []
    for i in range(n):
        job = manager.create_job(f"job {i}", user, **kwargs)
        job.save()
        jobs.append(job)
    return jobs


def test_list_jobs_is_app_scoped_and_typed(user: Any, other_user: Any) -> None:
    mine = JobManager("list_a")
    other_app = JobManager("list_b")
    basic = _make(mine, user, 2)
    local = _make(mine, user, 2, job_type="LOCAL", executable="true")
    _make(mine, other_user, 1)
    _make(other_app, user, 3)
    listed = list(mine.list_jobs())
    assert len(listed) == 5
    assert {j.label for j in listed} == {"list_a"}
    by_id = {j.pk: j for j in listed}
    for job in basic:
        assert type(by_id[job.pk]) is BasicJob
    for job in local:
        assert type(by_id[job.pk]) is LocalJob
    assert [j.pk for j in mine.list_jobs(user=user)] == [j.pk for j in basic + local]
    assert len(other_app.list_jobs(user=user)) == 3
    assert len(other_app.list_jobs(user=other_user)) == 0


def test_list_jobs_user_and_groups_together_is_an_error(user: Any) -> None:
    Group.objects.create(name="g")
    with pytest.raises(ValueError, match="user"):
        JobManager("list_c").list_jobs(user=user, groups="g")


def test_list_jobs_by_groups_without_duplicates(user: Any, other_user: Any) -> None:
    g1 = Group.objects.create(name="g1")
    g2 = Group.objects.create(name="g2")
    g3 = Group.objects.create(name="g3")
    manager = JobManager("list_d")
    both = manager.create_job("both", user, groups=[g1, g2])
    both.save()
    only1 = manager.create_job("only1", other_user, groups=g1)
    only1.save()
    only3 = manager.create_job("only3", user, groups="g3")
    only3.save()
    _make(manager, user, 2)  # no group
    assert [j.pk for j in manager.list_jobs(groups=[g1, g2])] == [both.pk, only1.pk]
    assert [j.pk for j in manager.list_jobs(groups=["g1", "g2"])] == [both.pk, only1.pk]
    assert [j.pk for j in manager.list_jobs(groups=g2)] == [both.pk]
    assert [j.pk for j in manager.list_jobs(groups="g3")] == [only3.pk]
    assert [j.pk for j in manager.list_jobs(groups=[g3])] == [only3.pk]
    assert manager.list_jobs(groups=[g1, g2, g3]).count() == 3


def test_list_jobs_filters_and_order_by(user: Any) -> None:
    manager = JobManager("list_e")
    jobs = _make(manager, user, 4)
    jobs[1].description = "special"
    jobs[1].save()
    jobs[3].description = "special"
    jobs[3].save()
    special = manager.list_jobs(filters={"description": "special"})
    assert [j.pk for j in special] == [jobs[1].pk, jobs[3].pk]
    assert [j.pk for j in manager.list_jobs(filters={"name__endswith": "2"})] == [jobs[2].pk]
    assert [j.pk for j in manager.list_jobs(order_by="-id")] == [j.pk for j in reversed(jobs)]
    assert [j.pk for j in manager.list_jobs(user=user, order_by="-id")] == [
        j.pk for j in reversed(jobs)
    ]


def test_list_jobs_hides_deleted_jobs(user: Any) -> None:
    manager = JobManager("list_f")
    jobs = _make(manager, user, 3)
    jobs[0].delete()
    assert [j.pk for j in manager.list_jobs()] == [jobs[1].pk, jobs[2].pk]
    assert manager.get_job(jobs[0].pk) is None


def _count_queries_iterating(manager: JobManager, user: Any) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as ctx:
        count = 0
        for job in manager.list_jobs(user=user):
            assert job.status == "Pending"
            assert job.name and job.type and job.label
            count += 1
    return len(ctx.captured_queries), count


def test_list_jobs_query_count_does_not_grow_with_the_jobs(user: Any) -> None:
    small = JobManager("count_small")
    large = JobManager("count_large")
    _make(small, user, 5, job_type="LOCAL", executable="true")
    large.bulk_create(
        [large.create_job(f"j{i}", user, job_type="LOCAL", executable="true") for i in range(50)]
    )
    queries_small, n_small = _count_queries_iterating(small, user)
    queries_large, n_large = _count_queries_iterating(large, user)
    assert (n_small, n_large) == (5, 50)
    assert queries_small == queries_large == 1


def test_iterating_list_jobs_is_one_query(user: Any, django_assert_num_queries: Any) -> None:
    manager = JobManager("count_one")
    _make(manager, user, 10)
    with django_assert_num_queries(1):
        statuses = [job.status for job in manager.list_jobs()]
    assert statuses == ["Pending"] * 10


# -- get_job ----------------------------------------------------------------------------------
def test_get_job(user: Any, other_user: Any) -> None:
    manager = JobManager("get_a")
    job = manager.create_job("mine", user, job_type="LOCAL", executable="true")
    job.save()
    theirs = manager.create_job("theirs", other_user)
    theirs.save()
    other_app_job = JobManager("get_b").create_job("elsewhere", user)
    other_app_job.save()

    got = manager.get_job(job.pk)
    assert type(got) is LocalJob
    assert got is not None and got.pk == job.pk and got.executable == "true"
    assert manager.get_job(str(job.pk)) is not None
    assert manager.get_job(job.pk, user=user) is not None
    assert manager.get_job(theirs.pk, user=user) is None  # another user's
    assert manager.get_job(theirs.pk) is not None  # without a user: the app's job
    assert manager.get_job(other_app_job.pk) is None  # another app's
    assert manager.get_job(10**9) is None  # nonexistent
    assert manager.get_job("not-a-number") is None
    assert manager.get_job(None) is None
    assert manager.get_job(job.pk, filters={"name": "mine"}) is not None
    assert manager.get_job(job.pk, filters={"name": "other"}) is None


def test_get_job_is_one_query(user: Any, django_assert_num_queries: Any) -> None:
    manager = JobManager("get_c")
    job = manager.create_job("mine", user)
    job.save()
    with django_assert_num_queries(1):
        got = manager.get_job(job.pk, user=user)
        assert got is not None and got.status == "Pending"


# -- status callback URL ----------------------------------------------------------------------
def test_status_callback_url(user: Any, rf: Any, settings: Any) -> None:
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "portal.example.org"]
    manager = JobManager("cb_app")
    job = manager.create_job("cb", user)
    job.save()
    request = rf.get("/some/page/", HTTP_HOST="portal.example.org:8080")
    url = manager.get_job_status_callback_url(request, job.pk)
    assert url.startswith("http://portal.example.org:8080/")
    assert url.endswith(f"update-job-status/{job.pk}/")
    secure = rf.get("/", secure=True, HTTP_HOST="portal.example.org")
    assert manager.get_job_status_callback_url(secure, job.pk).startswith("https://")


def test_bulk_create_writes_what_one_by_one_saving_writes(user: Any, tmp_path: Path) -> None:
    """The bulk path (COPY on PostgreSQL) stores the same rows and events as save(), and the
    created objects behave as loaded ones: an in-place edit is saved, an untouched field is not."""
    manager = JobManager("bulk_app")
    kwargs: dict[str, Any] = {
        "description": "ünïcode \t tab\nnewline \\ backslash",
        "extended_properties": {"nested": {"list": [1, 2.5, None, True, "x"]}},
    }
    single = manager.create_job("job {id}", user, job_type="LOCAL", executable="true", **kwargs)
    single.save()
    with CaptureQueriesContext(connection) as queries:
        made = manager.bulk_create(
            [
                manager.create_job("job {id}", user, job_type="LOCAL", executable="true", **kwargs),
                manager.create_job("ws", user, workspace=str(tmp_path / "given"), **kwargs),
            ]
        )
    statements = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" not in q["sql"]]
    if connection.vendor == "postgresql":
        # The ids from the sequence, then one COPY for the jobs and one for their events.
        assert len(statements) == 3
        assert [s.split()[0] for s in statements] == ["SELECT", "COPY", "COPY"]
    assert [type(j) for j in made] == [LocalJob, BasicJob]
    skip = {"id", "name", "workspace", "creation_time", "job_type"}
    stored_single = Job.objects.get(pk=single.pk)
    for job in made:
        stored = Job.objects.get(pk=job.pk)
        assert not job._state.adding
        for field in Job._meta.concrete_fields:
            assert getattr(stored, field.attname) == getattr(job, field.attname), field.attname
            if job is made[0] and field.attname not in skip:
                assert getattr(stored, field.attname) == getattr(stored_single, field.attname), (
                    field.attname
                )
        assert [(e.from_status, e.to_status, e.message, e.source) for e in stored.events] == [
            ("", "PEN", "created", "app")
        ]
    assert made[0].name == f"job {made[0].pk}"
    assert made[0].workspace.endswith(os.path.join("jobs", str(made[0].pk)))
    assert made[1].workspace == str(tmp_path / "given") and not made[1].owns_workspace
    job = made[0]
    with CaptureQueriesContext(connection) as queries:
        job.save()
    assert not [q for q in queries.captured_queries if "UPDATE" in q["sql"]]
    job.extended_properties["nested"]["list"].append("more")
    job.save()
    assert Job.objects.get(pk=job.pk).extended_properties["nested"]["list"][-1] == "more"


def test_build_makes_what_the_constructor_makes(user: Any, tmp_path: Path) -> None:
    """Job.build (create_job's fast constructor) gives the same unsaved job as cls(**values)."""
    from django.db.models.signals import pre_init

    values: dict[str, Any] = {
        "name": "b {id}",
        "user": user,
        "label": "app1",
        "job_type": "LOCAL",
        "description": "d",
        "workspace": str(tmp_path),
        "extended_properties": {"x": [1]},
    }
    built, made = LocalJob.build(**values), LocalJob(**values)
    for field in Job._meta.concrete_fields:
        if field.attname != "creation_time":
            assert getattr(built, field.attname) == getattr(made, field.attname), field.attname
    assert abs((built.creation_time - made.creation_time).total_seconds()) < 5
    assert built._state.adding and built._state.db == made._state.db
    assert built.user is user
    assert built.parameters == {} and built.parameters is not made.parameters
    assert LocalJob.build(name="n", label="a").job_type == "LOCAL"
    with pytest.raises(ValueError):
        LocalJob.build(name="n", label="a", user="not a user")
    heard: list[Any] = []
    pre_init.connect(lambda sender, **kw: heard.append(sender), sender=LocalJob, weak=False)
    try:
        LocalJob.build(name="n", label="a")
    finally:
        pre_init.receivers.clear()
        pre_init.sender_receivers_cache.clear()
    assert heard == [LocalJob]
