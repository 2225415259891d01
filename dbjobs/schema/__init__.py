"""Schema snapshots, change detection, migration files and their safe application."""
