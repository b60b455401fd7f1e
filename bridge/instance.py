"""This process's identity within the gateway."""

import os
import time
import uuid

INSTANCE_ID = f"{os.uname().nodename[:20]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
STARTED_AT = time.time()
