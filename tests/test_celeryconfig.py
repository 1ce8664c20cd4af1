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
    assert config["task_routes"] == {"eduranker.train_reranker": {"queue": "training"}}
    assert config["task_track_started"] and config["worker_send_task_events"]


def test_app_takes_its_urls_from_settings():
    app = make_celery(Settings(celery_broker_url="redis://10.0.0.9:6390/3"))
    assert app.conf.broker_url == "redis://10.0.0.9:6390/3"
    assert app.conf.accept_content == ["json"]
