"""dbjobs: back up, restore and migrate SQL databases as plain, typed jobs.

The package knows nothing of Celery or the command line; `workers/` and `cli.py` drive it.
"""

__version__ = "0.1.0"
