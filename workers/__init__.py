"""The Celery layer: the app and its configuration, one task per public job, the database locks.

Thin on purpose: the jobs live in `dbjobs/`; this package only carries them across processes.
"""
