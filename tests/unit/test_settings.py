"""Settings validation: every malformed value is a ConfigError naming its variable."""

import pytest

from dbjobs.errors import ConfigError, UnknownDatabaseError
from dbjobs.settings import load_settings, parse_databases


def settings(**env: str):
    return load_settings(env, dotenv=None)


def test_defaults_use_the_sample_database() -> None:
    s = settings()
    assert s.sample_database and s.databases["default"].startswith("sqlite:///")
    assert (s.keep_days, s.min_keep, s.backup_interval_hours, s.cleanup_interval_days) == (30, 5, 24, 1)
    assert s.broker_url is None and not s.production
    assert (s.pre_restore_keep, s.pre_restore_days) == (1, 7) and s.restore_jobs >= 1


def test_aliases_from_pairs_and_json() -> None:
    assert parse_databases("a=sqlite:///a.db; b=postgresql://u:p@h/b") == {
        "a": "sqlite:///a.db", "b": "postgresql://u:p@h/b"}
    assert parse_databases('{"x": "mysql://root@h/x"}') == {"x": "mysql://root@h/x"}


@pytest.mark.parametrize(("name", "value"), [
    ("BACKUP_INTERVAL_HOURS", "abc"), ("BACKUP_INTERVAL_HOURS", "0"), ("BACKUP_KEEP_DAYS", "-1"),
    ("BACKUP_MIN_KEEP", "2.5"), ("BACKUP_CLEANUP_INTERVAL_DAYS", "nan"),
    ("BACKUP_INTERVAL_HOURS", "inf"), ("DBJOBS_DATABASES", "noequals"),
    ("DBJOBS_DATABASES", "{bad json"), ("DBJOBS_DATABASES", "9bad=sqlite:///x"), ("DBJOBS_ENV", "prod"),
    ("DBJOBS_BROKER_URL", "amqp://guest@localhost//"), ("DBJOBS_MODELS", "app.models"),
    ("DBJOBS_RESTORE_JOBS", "0"), ("DBJOBS_RESTORE_JOBS", "two"), ("DBJOBS_PRE_RESTORE_KEEP", "-1"),
    ("DBJOBS_PRE_RESTORE_DAYS", "soon"),
])
def test_malformed_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        settings(**{name: value})
    assert name in str(err.value)


def test_unknown_alias_lists_known_ones_without_urls() -> None:
    s = settings(DBJOBS_DATABASE_URL="postgresql://u:secret@h/db")
    with pytest.raises(UnknownDatabaseError) as err:
        s.database("nope")
    assert "default" in str(err.value) and "secret" not in str(err.value)
    assert "secret" not in repr(s) and "secret" not in s.database("default").redacted()


DRILL_ALIASES = {"DBJOBS_DATABASES": "app=postgresql://h/app;pg_scratch=postgresql://h/s;lite=sqlite:///l.db;"
                                     "lite_scratch=sqlite:///s.db"}


def test_drill_targets_from_one_scratch_alias_or_pairs() -> None:
    one = load_settings({**DRILL_ALIASES, "BACKUP_VERIFY_INTO": "pg_scratch"}, dotenv=None)
    assert one.drill_targets() == {"app": "pg_scratch"}  # only the aliases of the scratch's engine
    pairs = load_settings({**DRILL_ALIASES, "BACKUP_VERIFY_INTO": "app=pg_scratch, lite=lite_scratch",
                           "BACKUP_VERIFY_INTERVAL_HOURS": "12"}, dotenv=None)
    assert pairs.drill_targets() == {"app": "pg_scratch", "lite": "lite_scratch"}
    assert pairs.verify_interval_hours == 12
    assert load_settings(DRILL_ALIASES, dotenv=None).drill_targets() == {}


@pytest.mark.parametrize("env,message", [
    ({"BACKUP_VERIFY_INTO": "nope"}, "BACKUP_VERIFY_INTO names 'nope', which is not a configured alias"),
    ({"BACKUP_VERIFY_INTO": "app=app"}, "'app' cannot be its own scratch alias"),
    ({"BACKUP_VERIFY_INTERVAL_HOURS": "6"}, "BACKUP_VERIFY_INTERVAL_HOURS is set but BACKUP_VERIFY_INTO is not"),
    ({"BACKUP_VERIFY_INTO": "pg_scratch", "BACKUP_VERIFY_INTERVAL_HOURS": "0"}, "an interval must be greater"),
])
def test_bad_drill_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings({**DRILL_ALIASES, **env}, dotenv=None)
