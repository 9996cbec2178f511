"""Django admin for offload: jobs (read-mostly: their history inline, cancel/resubmit actions that
go through the store), job events and intents (read-only), and schedulers (whose secrets can be
replaced but are never shown)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from offload import store
from offload.errors import InvalidJobError, JobNotFoundError, JobStateError, NotSupportedError
from offload.models import ApiToken, EventSource, Job, JobEvent, JobIntent, Scheduler

if TYPE_CHECKING:  # the admin classes are generic for type checkers only
    JobAdminBase = admin.ModelAdmin[Job]
    JobEventAdminBase = admin.ModelAdmin[JobEvent]
    JobIntentAdminBase = admin.ModelAdmin[JobIntent]
    SchedulerAdminBase = admin.ModelAdmin[Scheduler]
    ApiTokenAdminBase = admin.ModelAdmin[ApiToken]
    JobEventInlineBase = admin.TabularInline[JobEvent, Job]
    SchedulerFormBase = forms.ModelForm[Scheduler]
else:
    JobAdminBase = JobEventAdminBase = JobIntentAdminBase = SchedulerAdminBase = admin.ModelAdmin
    ApiTokenAdminBase = admin.ModelAdmin
    JobEventInlineBase = admin.TabularInline
    SchedulerFormBase = forms.ModelForm

#: Secrets a scheduler may hold (see :func:`offload.schedulers.create_scheduler`).
SECRET_FIELDS = {"password": "Password", "private_key_pass": "Private key passphrase"}


class ReadOnlyAdminMixin:
    """No adding, changing or deleting from the admin: these rows are written by the store."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class JobEventInline(ReadOnlyAdminMixin, JobEventInlineBase):
    model = JobEvent
    extra = 0
    can_delete = False
    ordering = ("id",)
    fields = (
        "time",
        "attempt",
        "from_status",
        "to_status",
        "status_text",
        "source",
        "actor",
        "native_status",
        "message",
    )
    readonly_fields = fields
    show_change_link = False


class StaleFilter(admin.SimpleListFilter):
    title = "stale"
    parameter_name = "stale"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Stale"), ("no", "Not stale")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if self.value() == "yes":
            return queryset.filter(stale_since__isnull=False)
        if self.value() == "no":
            return queryset.filter(stale_since__isnull=True)
        return queryset


@admin.register(Job)
class JobAdmin(JobAdminBase):
    """Jobs are read-mostly here: only the name and description can be edited; status changes,
    deletion and resubmission go through the store (its rules and its history)."""

    list_display = ("id", "name", "user", "label", "job_type", "status_badge", "created")
    list_display_links = ("id", "name")
    list_filter = (
        "_status",
        "job_type",
        "label",
        StaleFilter,
        ("deleted_at", admin.EmptyFieldListFilter),
        "creation_time",
    )
    search_fields = ("=id", "name", "description", "label", "user__username", "native_id")
    list_select_related = ("user",)
    list_per_page = 50
    date_hierarchy = "creation_time"
    ordering = ("-id",)
    inlines = (JobEventInline,)
    actions = ("cancel_jobs", "resubmit_jobs")
    fields = (
        "name",
        "description",
        "user",
        "label",
        "job_type",
        "status_badge",
        "status_message",
        "scheduler",
        "native_id",
        "native_status",
        "attempt",
        "creation_time",
        "execute_time",
        "start_time",
        "completion_time",
        "last_contact",
        "stale_since",
        "deleted_at",
        "workspace",
        "extended_properties",
        "parameters",
        "engine_state",
        "process_results_function_path",
    )
    readonly_fields = tuple(f for f in fields if f not in ("name", "description"))

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs are created by apps (JobManager), the CLI or the API

    @admin.display(description="status", ordering="_status")
    def status_badge(self, job: Job) -> str:
        return f"{job.cached_status} (stale)" if job.stale_since else job.cached_status

    @admin.display(description="created", ordering="creation_time")
    def created(self, job: Job) -> Any:
        return job.creation_time

    @admin.display(description="process results function")
    def process_results_function_path(self, job: Job) -> str:
        return job._process_results_function or "—"

    def delete_model(self, request: HttpRequest, obj: Job) -> None:
        store.delete(obj, actor=request.user.get_username())

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            store.delete(job, actor=request.user.get_username())

    def _act(self, request: HttpRequest, queryset: QuerySet[Job], verb: str, action: Any) -> None:
        done, failed = 0, []
        for job in queryset.filter(deleted_at__isnull=True):
            try:
                action(job, source=EventSource.USER, actor=request.user.get_username())
                done += 1
            except (JobStateError, NotSupportedError, InvalidJobError, JobNotFoundError) as exc:
                failed.append(str(exc))
        if done:
            self.message_user(request, f"{verb}: {done} job(s).", messages.SUCCESS)
        for problem in failed:
            self.message_user(request, problem, messages.WARNING)

    @admin.action(description="Cancel selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._act(request, queryset, "Cancel requested", store.stop)

    @admin.action(description="Resubmit selected jobs")
    def resubmit_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        self._act(request, queryset, "Resubmitted", store.resubmit)


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdminMixin, JobEventAdminBase):
    list_display = ("id", "job", "time", "from_status", "to_status", "source", "actor", "message")
    list_filter = ("source", "to_status", "time")
    search_fields = ("=job__id", "message", "native_status", "actor")
    list_select_related = ("job",)
    date_hierarchy = "time"
    ordering = ("-id",)


@admin.register(JobIntent)
class JobIntentAdmin(ReadOnlyAdminMixin, JobIntentAdminBase):
    list_display = (
        "id",
        "job",
        "action",
        "attempt",
        "created",
        "tries",
        "claimed_by",
        "done_at",
        "outcome",
    )
    list_filter = ("action", ("done_at", admin.EmptyFieldListFilter))
    search_fields = ("=job__id", "claimed_by", "outcome", "requested_by")
    list_select_related = ("job",)
    ordering = ("-id",)


class SchedulerForm(SchedulerFormBase):
    """Secrets are write-only: a filled field replaces that secret, an empty one keeps it, and
    "clear secrets" removes them all. Stored secrets are never sent to the browser."""

    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the stored one.",
    )
    private_key_pass = forms.CharField(
        label=SECRET_FIELDS["private_key_pass"],
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Leave empty to keep the stored one.",
    )
    clear_secrets = forms.BooleanField(required=False, label="Clear stored secrets")

    class Meta:
        model = Scheduler
        fields = ("name", "scheduler_type", "host", "port", "username", "options")

    def save(self, commit: bool = True) -> Scheduler:
        scheduler = super().save(commit=False)
        secrets = {} if self.cleaned_data.get("clear_secrets") else scheduler.get_secrets()
        for key in SECRET_FIELDS:
            value = self.cleaned_data.get(key)
            if value:
                secrets[key] = value
        scheduler.set_secrets(secrets)
        if commit:
            scheduler.save()
        return scheduler


@admin.register(Scheduler)
class SchedulerAdmin(SchedulerAdminBase):
    form = SchedulerForm
    list_display = ("name", "scheduler_type", "host", "port", "username", "secrets_stored")
    list_filter = ("scheduler_type",)
    search_fields = ("name", "host", "username")
    readonly_fields = ("secrets_stored", "created")
    fieldsets = (
        (None, {"fields": ("name", "scheduler_type", "host", "port", "username", "options")}),
        (
            "Secrets (encrypted at rest, never shown)",
            {"fields": ("secrets_stored", "password", "private_key_pass", "clear_secrets")},
        ),
        (None, {"fields": ("created",)}),
    )

    @admin.display(description="secrets stored")
    def secrets_stored(self, scheduler: Scheduler) -> str:
        """Which secrets are stored (their names, never their values)."""
        try:
            names = sorted(scheduler.get_secrets())
        except Exception:  # a key change (new SECRET_KEY) makes them unreadable
            return "unreadable (was SECRET_KEY changed?)"
        return ", ".join(SECRET_FIELDS.get(n, n) for n in names) or "none"


@admin.register(ApiToken)
class ApiTokenAdmin(ApiTokenAdminBase):
    """API tokens: adding one shows the token once (only its hash is stored); they cannot be
    edited, only deleted (revoked)."""

    list_display = ("prefix", "name", "user", "created", "last_used")
    list_filter = ("created", "last_used")
    search_fields = ("name", "prefix", "user__username")
    list_select_related = ("user",)
    ordering = ("-id",)
    fields = ("user", "name", "prefix", "created", "last_used")
    readonly_fields = ("prefix", "created", "last_used")
    raw_id_fields = ("user",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if change:
            return

        from offload.web.access import set_new_token

        token = set_new_token(obj)
        obj.save()
        self.message_user(
            request,
            f"The new API token for {obj.user.get_username()} (shown only now; copy it): {token}",
            messages.WARNING,
        )
