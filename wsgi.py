"""The production entry points (see Procfile).

``wsgi:app`` serves everything: pages, API, live streams and the tracking endpoints.
``wsgi:track`` serves the tracking endpoints alone, for processes given only those.
"""

import gc
import sys

from app import create_app
from config.settings import ConfigError, configure_logging

try:
    configure_logging()
    app = create_app()
except ConfigError as exc:
    # The message alone: it names the setting and says what to set.
    sys.exit(f"trailmark: {exc}")
track = app.extensions["trailmark.tracking"].alone()
# granian loads this module in each of its processes: start shipping now, so that
# hits a crashed process left in the spool go out without waiting for a new one.
app.extensions["trailmark.spool"].start()
# What start-up made lives as long as the process: keep it out of the collector's
# passes, which would otherwise walk some hundred thousand objects (about 50 ms here)
# in the middle of answering pixels. Processes forked from here share it untouched.
gc.freeze()
