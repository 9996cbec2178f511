"""``{% load offload_tags %}`` then ``{% jobs_table jobs column_fields=... %}`` (or
``{% jobs_table options %}`` with a :class:`offload.web.jobs_table.JobsTable`): Tethys's
JobsTable gizmo. See docs/web.md for the options."""

from __future__ import annotations

import dataclasses
from typing import Any

from django import template
from django.template import TemplateDoesNotExist
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from offload.web import jobs_table as table

register = template.Library()

TEMPLATE_NAME = "offload/jobs_table.html"
_COUNTER = "offload_jobs_tables"


def _template(context: template.Context) -> Any:
    """The project's ``offload/jobs_table.html`` (so it can be overridden), else offload's own."""
    engine = getattr(getattr(context, "template", None), "engine", None)
    if engine is not None:
        try:
            return engine.get_template(TEMPLATE_NAME)
        except TemplateDoesNotExist:
            pass
    from offload.web.views import _own_templates

    return _own_templates().engine.get_template(TEMPLATE_NAME)


@register.simple_tag(takes_context=True)
def jobs_table(context: template.Context, jobs: Any, **options: Any) -> SafeString:
    """Render a jobs table. Bad options raise InvalidJobError naming the option."""
    from offload.web.views import BADGE_CLASSES

    request = context.get("request")
    made = table.make_options(jobs, **options)
    if made.user is None and request is not None and hasattr(request, "user"):
        from offload.web import access

        made = dataclasses.replace(
            made,
            user=request.user,
            anonymous_jobs=tuple(made.anonymous_jobs or access.anonymous_jobs_of(request)),
        )
    built = table.build(made, BADGE_CLASSES)
    if not built["options"].next_url and request is not None:
        built["next_url"] = request.get_full_path()
    else:
        built["next_url"] = built["options"].next_url
    built["badge_classes"] = BADGE_CLASSES
    token = context.get("csrf_token")
    csrf_input = (
        format_html('<input type="hidden" name="csrfmiddlewaretoken" value="{}">', token)
        if token and str(token) != "NOTPROVIDED"
        else ""
    )
    built["rows"] = [
        dataclasses.replace(
            row,
            actions_html=table.actions_html(row.actions, row.job.pk, csrf_input, built["next_url"]),
        )
        for row in built["rows"]
    ]
    # Ids unique on the page; the first table also brings the styles and the #live-state line.
    count = int(context.render_context.get(_COUNTER) or 0) + 1
    context.render_context[_COUNTER] = count
    built["first_table"] = count == 1
    built["table_id"] = "offload-jobs" if count == 1 else f"offload-jobs-{count}"
    built["badges_id"] = f"{built['table_id']}-badges"
    built["state_id"] = "live-state" if count == 1 else f"{built['table_id']}-state"
    new_context = context.new(built)
    csrf_token = context.get("csrf_token")
    if csrf_token is not None:
        new_context["csrf_token"] = csrf_token
    html = str(_template(context).render(new_context))
    return mark_safe(html)  # noqa: S308 (a rendered, autoescaped template)
