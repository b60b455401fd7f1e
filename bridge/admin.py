"""Django admin for public accounts, with their live state from the gateway."""

from asgiref.sync import async_to_sync
from django.contrib import admin, messages

from accounts.models import PublicAccount

from .connections import aclose_all, aconnection_counts
from .errors import Forbidden


class AccountDeactivated(Forbidden):
    default_message = "This public account was deactivated."


@admin.register(PublicAccount)
class PublicAccountAdmin(admin.ModelAdmin):
    list_display = ("handle", "display_name", "is_active", "online", "last_seen_at", "created_at")
    list_filter = ("is_active",)
    search_fields = ("handle", "display_name", "description")
    readonly_fields = ("token_prefix", "created_at", "last_seen_at")
    fields = (
        "handle",
        "display_name",
        "description",
        "is_active",
        "serves_users",
        "serves_channels",
        "token_prefix",
        "created_at",
        "last_seen_at",
    )
    actions = ("activate", "deactivate", "issue_token")

    def get_changelist_instance(self, request):
        changelist = super().get_changelist_instance(request)
        handles = [account.handle for account in changelist.result_list]
        counts = async_to_sync(aconnection_counts)(handles)
        for account in changelist.result_list:
            account.live_connections = counts[account.handle]
        return changelist

    @admin.display(description="online")
    def online(self, account):
        count = getattr(account, "live_connections", 0)
        return f"{count} connection{'s' if count != 1 else ''}" if count else "offline"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            self._disconnect(request, [obj])

    @admin.action(description="Activate the selected accounts")
    def activate(self, request, queryset):
        for account in queryset:
            account.is_active = True
            account.save(update_fields=["is_active"])
        self.message_user(request, f"Activated {len(queryset)} account(s).")

    @admin.action(description="Deactivate the selected accounts and close their connections")
    def deactivate(self, request, queryset):
        accounts = list(queryset)
        for account in accounts:
            account.is_active = False
            account.save(update_fields=["is_active"])
        self._disconnect(request, accounts)

    @admin.action(description="Issue a new token (shown once)")
    def issue_token(self, request, queryset):
        for account in queryset:
            raw = account.issue_token()
            self.message_user(
                request,
                f"New token for @{account.handle}, shown this once: {raw}",
                messages.WARNING,
            )

    def _disconnect(self, request, accounts) -> None:
        closed = sum(
            async_to_sync(aclose_all)(account.handle, AccountDeactivated) for account in accounts
        )
        self.message_user(
            request, f"Deactivated {len(accounts)} account(s); closed {closed} connection(s)."
        )
