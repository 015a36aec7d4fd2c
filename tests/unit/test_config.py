import pytest

from tidings import App, ImproperlyConfigured
from tidings.config import SETTINGS, Settings


def test_celery_defaults():
    conf = Settings(environ={})
    assert conf.broker_url is None
    assert conf.event_exchange == "celeryev"
    assert conf.event_queue_prefix == "celeryev"
    assert conf.event_queue_ttl == 5.0
    assert conf.event_queue_expires == 60.0
    assert conf.event_queue_exclusive is True
    assert conf.event_queue_durable is False
    assert conf.event_serializer == "json"
    assert conf.worker_send_task_events is False
    assert conf.task_send_sent_event is False


def test_environment_sets_every_setting_and_explicit_wins():
    env = {"TIDINGS_EVENT_EXCHANGE": "ev2", "TIDINGS_EVENT_QUEUE_TTL": "2.5",
           "TIDINGS_WORKER_SEND_TASK_EVENTS": "yes", "TIDINGS_BROKER_URL": "redis://x/1"}
    conf = Settings({"event_exchange": "mine"}, environ=env)
    assert conf.event_exchange == "mine"
    assert conf.event_queue_ttl == 2.5
    assert conf.worker_send_task_events is True
    assert conf.broker_url == "redis://x/1"
    assert all(s.env_var == "TIDINGS_" + name.upper() for name, s in SETTINGS.items())


def test_app_broker_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("TIDINGS_BROKER_URL", "redis://elsewhere/0")
    assert App(broker="amqp://h//").conf.broker_url == "amqp://h//"
    assert App().conf.broker_url == "redis://elsewhere/0"


@pytest.mark.parametrize(
    ("name", "value"),
    [("event_queue_ttl", "soon"), ("event_queue_ttl", -1), ("event_queue_exclusive", "maybe"),
     ("event_exchange", ""), ("event_outbound_buffer_limit", 0), ("accept_content", 5)],
)
def test_bad_values_name_the_setting(name, value):
    with pytest.raises(ImproperlyConfigured, match=name):
        App(**{name: value})


def test_bad_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("TIDINGS_EVENT_QUEUE_EXPIRES", "never")
    with pytest.raises(ImproperlyConfigured, match="TIDINGS_EVENT_QUEUE_EXPIRES"):
        App()


def test_conf_is_validated_on_assignment_and_reads_as_attributes():
    app = App()
    app.conf.event_queue_ttl = "3"
    assert app.conf["event_queue_ttl"] == 3.0
    with pytest.raises(ImproperlyConfigured):
        app.conf.update(event_queue_durable="sometimes")
    app.conf.some_celery_setting = {"a": 1}  # unknown names are kept as they are
    assert app.conf["some_celery_setting"] == {"a": 1}
