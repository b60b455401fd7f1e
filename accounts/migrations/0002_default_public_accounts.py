from django.db import migrations

DEFAULTS = {
    "ci_bot": "CI bot",
    "email_bot": "Email bot",
    "notification_bot": "Notification bot",
    "system_bot": "System bot",
}


def create_defaults(apps, schema_editor):
    PublicAccount = apps.get_model("accounts", "PublicAccount")
    for handle, name in DEFAULTS.items():
        PublicAccount.objects.get_or_create(handle=handle, defaults={"display_name": name})


class Migration(migrations.Migration):
    dependencies = [("accounts", "0001_public_account")]
    operations = [migrations.RunPython(create_defaults, migrations.RunPython.noop)]
