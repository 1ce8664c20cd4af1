import os
import subprocess
import sys

import pytest

import celeryconfig
from eduranker.queue import make_celery
from eduranker.settings import Settings


def test_celery_accepts_json_only_and_acks_late():
    config = celeryconfig.from_settings(Settings(task_time_limit=1800))
    assert config["accept_content"] == ["json"] and config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["task_acks_late"] and config["task_reject_on_worker_lost"]
    assert config["worker_prefetch_multiplier"] == 1
    assert config["broker_transport_options"]["visibility_timeout"] > config["task_time_limit"] == 1800
    assert config["task_soft_time_limit"] < config["task_time_limit"]
    assert config["task_track_started"] and config["worker_send_task_events"]
    # A stopping worker waits this long, then cancels the job (which hands itself back).
    assert config["worker_soft_shutdown_timeout"] == Settings().worker_soft_shutdown_seconds > 0


@pytest.mark.parametrize("limit", [40, 1800, 3600])
def test_redelivery_outlasts_a_job_and_the_reaper_waits_for_redelivery(limit):
    s = Settings(task_time_limit=limit, job_heartbeat_seconds=15)
    config = celeryconfig.from_settings(s)
    options = config["broker_transport_options"]
    assert 0 < config["task_soft_time_limit"] < config["task_time_limit"] == limit
    assert options["visibility_timeout"] == s.redelivery_after_s > limit
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= s.redelivery_after_s / 4
    # The producer requeues a silent run only after a takeover by redelivery had its chance.
    assert s.job_requeue_after_s > s.job_stale_after_s


def test_app_takes_its_urls_from_settings():
    app = make_celery(Settings(celery_broker_url="redis://10.0.0.9:6390/3"))
    assert app.conf.broker_url == "redis://10.0.0.9:6390/3"
    assert app.conf.accept_content == ["json"]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.isupper() or k in {"PATH", "HOME", "PYTHONPATH"}}
    return subprocess.run(
        [sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True, timeout=120
    )


def test_the_module_form_is_what_the_worker_runs_and_follows_the_environment():
    code = (
        "import celeryconfig, worker\n"
        "from celery import Celery\n"
        "app = Celery(); app.config_from_object('celeryconfig')\n"
        "print(app.conf.broker_url, app.conf.task_time_limit, celeryconfig.task_acks_late)\n"
        "print(worker.app.conf.broker_url, worker.app.conf.task_time_limit, worker.app.conf.task_acks_late)\n"
        "print('broker_url' in dir(celeryconfig))"
    )
    done = _python(code, CELERY_BROKER_URL="redis://10.1.2.3:6390/4", TASK_TIME_LIMIT="1800")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["redis://10.1.2.3:6390/4 1800 True"] * 2 + ["True"]


def test_importing_the_module_reads_no_environment_and_a_bad_value_stops_with_one_line():
    done = _python("import celeryconfig; print('imported'); celeryconfig.broker_url", TASK_TIME_LIMIT="soon")
    assert done.stdout == "imported\n"
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["invalid setting: TASK_TIME_LIMIT='soon': expected a whole number"]


def test_unknown_names_are_attribute_errors_not_settings():
    with pytest.raises(AttributeError):
        celeryconfig.not_a_celery_setting  # noqa: B018


@pytest.mark.parametrize(("kwargs", "queue"), [({"job_id": "x"}, "training"), ({"index": "default"}, "training"),
                                               ({"job_id": "fr-x", "index": "fr"}, "training.fr"),
                                               ({"job_id": "de-x", "index": "de"}, "training")])  # fmt: skip
def test_celery_routes_a_job_to_its_index_queue_however_it_is_sent(kwargs, queue):
    """Celery's own router, as `send_task`, `delay()` and a retry consult it."""
    from celery import Celery

    app = Celery("routes")
    app.conf.update(celeryconfig.from_settings(Settings(indexes='{"fr": {"owns": {"query.index": "fr"}}}')))
    route = app.amqp.router.route({}, celeryconfig.TASK_NAME, args=(), kwargs=kwargs)
    assert route["queue"].name == queue
    explicit = app.amqp.router.route({"queue": "elsewhere"}, celeryconfig.TASK_NAME, args=(), kwargs=kwargs)
    assert explicit["queue"].name == "elsewhere"  # a queue the sender names wins
