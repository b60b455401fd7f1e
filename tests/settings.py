"""Settings for the test process: the project's, with a development default."""

import os

os.environ.setdefault("DEBUG", "true")
# The unit tests run on the embedded default; Redis and PostgreSQL tests
# start their own gateway processes with those URLs.
os.environ["REDIS_URL"] = ""

from realtime.settings import *  # noqa: F403
