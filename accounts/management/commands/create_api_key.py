"""`manage.py create_api_key --name NAME --scopes push,send [--expires-days N]`."""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from accounts.models import SCOPES, ApiKey


class Command(BaseCommand):
    help = "Make an API key for the HTTP API; prints the raw key, once, on the last line."

    def add_arguments(self, parser):
        parser.add_argument("--name", required=True, help="Who or what the key is for.")
        parser.add_argument(
            "--scopes", required=True, help=f"Comma-separated, among {', '.join(SCOPES)}."
        )
        parser.add_argument(
            "--expires-days", type=int, help="Days until it expires; never when absent."
        )

    def handle(self, *args, name, scopes, expires_days, **options):
        if expires_days is not None and expires_days < 1:
            raise CommandError("--expires-days must be at least 1.")
        key = ApiKey(
            name=name,
            scopes=[s.strip() for s in scopes.split(",") if s.strip()],
            expiry_date=timezone.now() + timedelta(days=expires_days) if expires_days else None,
        )
        try:
            key.full_clean(exclude=["id", "prefix", "hashed_key"])
        except ValidationError as exc:
            raise CommandError(
                " ".join(
                    f"{field}: {' '.join(errors)}" for field, errors in exc.message_dict.items()
                )
            ) from None
        raw = ApiKey.objects.assign_key(key)
        key.save()
        expires = (
            f"expires {key.expiry_date:%Y-%m-%d %H:%M} UTC" if key.expiry_date else "no expiry"
        )
        self.stdout.write(
            f"API key {key.name!r}: prefix {key.prefix}, scopes {', '.join(key.scopes)}, {expires}."
        )
        self.stdout.write("It is shown this once; store it now:")
        self.stdout.write(raw)
