"""Django admin for API keys: made here (the raw key shown once, in a
message after saving), revoked, never deleted."""

from django import forms
from django.contrib import admin
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from .models import SCOPES, ApiKey

# The library registers its own APIKey model, which the gateway does not use.
admin.site.unregister(APIKey)

EDITABLE = ("name", "scopes", "expiry_date")
RECORDED = ("prefix", "created", "last_used_at", "revoked", "revoked_at")


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in SCOPES],
        widget=forms.CheckboxSelectMultiple,
        help_text=ApiKey._meta.get_field("scopes").help_text,
    )

    class Meta:
        model = ApiKey
        fields = EDITABLE


@admin.register(ApiKey)
class ApiKeyAdmin(APIKeyModelAdmin):
    """The library's admin (its `save_model` shows the new key once), with
    scopes, last use and revocation."""

    form = ApiKeyForm
    list_display = (
        "name",
        "prefix",
        "scope_list",
        "expiry_date",
        "last_used_at",
        "revoked",
        "created",
    )
    list_filter = ("revoked",)
    search_fields = ("name", "prefix")
    actions = ("revoke",)

    def get_fields(self, request, obj=None):
        return EDITABLE if obj is None else EDITABLE + RECORDED

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return RECORDED + (EDITABLE if obj.revoked else ())

    def has_delete_permission(self, request, obj=None):
        # Revoke instead: what a key did stays attributable to it.
        return False

    @admin.display(description="scopes")
    def scope_list(self, key):
        return ", ".join(key.scopes)

    @admin.action(description="Revoke the selected keys")
    def revoke(self, request, queryset):
        keys = [key for key in queryset if not key.revoked]
        for key in keys:
            key.revoke()
        self.message_user(request, f"Revoked {len(keys)} key(s).")
