"""Custom statuses declared per app in each of Tethys's five categories, on the real database."""

from __future__ import annotations

from typing import Any

import pytest

from offload import JobManager
from offload.errors import InvalidJobError, JobStateError
from offload.models import Job
from offload.status import Category

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("offload_home")]


@pytest.mark.parametrize("category", [c.value for c in Category])
def test_a_custom_status_can_be_declared_in_every_category(user: Any, category: str) -> None:
    manager = JobManager(f"cat_{category.replace('-', '_')}")
    manager.add_custom_status("Custom", category)
    job = manager.create_job("c", user)
    job.save()
    job.update_status("Custom")
    fresh = Job.objects.get(pk=job.pk)
    assert fresh.status == "Custom"
    assert fresh.other_category is Category(category)


def test_a_non_terminal_custom_status_sits_beside_paused(user: Any) -> None:
    manager = JobManager("nonterminal_app", custom_statuses={"Waiting for review": "non-terminal"})
    job = manager.create_job("r", user)
    job.save()
    job.update_status("Running")
    job.update_status("Waiting for review")  # sideways from Running
    fresh = Job.objects.get(pk=job.pk)
    assert (fresh.status, fresh.other_category) == ("Waiting for review", Category.NON_TERMINAL)
    assert fresh.completion_time is None  # not final
    with pytest.raises(JobStateError, match="cannot go back"):
        fresh.update_status("Submitted")
    fresh.update_status("Paused")
    fresh.update_status("Waiting for review")
    fresh.update_status("Complete")
    assert Job.objects.get(pk=job.pk).status == "Complete"


def test_declaring_a_custom_status_checks_the_category_and_the_text(user: Any) -> None:
    manager = JobManager("declare_app")
    with pytest.raises(InvalidJobError) as info:
        manager.add_custom_status("Bad", "sideways")
    assert info.value.field == "category"
    assert "non-terminal" in str(info.value)  # lists the valid ones
    with pytest.raises(InvalidJobError, match=r"^category: "):
        JobManager("declare_app2", custom_statuses={"Bad": "finished"})
    for text in ("", "   ", None):
        with pytest.raises(InvalidJobError, match=r"^text: "):
            manager.add_custom_status(text, "running")  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError, match=r"^text: 'Running' is the built-in status Running"):
        manager.add_custom_status("Running", "terminal")
    with pytest.raises(InvalidJobError, match=r"^text: 'COM' is the built-in status Complete"):
        manager.add_custom_status("COM", "running")
    # Spelled as Python names, too.
    manager.add_custom_status("Reviewing", "NON_TERMINAL")
    job = manager.create_job("j", user)
    job.save()
    job.update_status("Reviewing")
    assert Job.objects.get(pk=job.pk).other_category is Category.NON_TERMINAL
