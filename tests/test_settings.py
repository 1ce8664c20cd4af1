import pytest

from eduranker.settings import Settings


def test_defaults_name_the_production_model_and_database():
    s = Settings.from_env({})
    assert s.base_model_name == "cross-encoder/ms-marco-MiniLM-L-6-v2"
    assert s.mongodb_db == "edu_ranker_db"
    assert s.models_dir == "models"
    assert s.min_feedback == 10


def test_environment_values_are_typed():
    s = Settings.from_env({"NUM_EPOCHS": "5", "LEARNING_RATE": "3e-5", "WARM_START": "yes", "MONGODB_DB": "other"})
    assert (s.num_epochs, s.learning_rate, s.warm_start, s.mongodb_db) == (5, 3e-5, True, "other")


@pytest.mark.parametrize("name,value", [("NUM_EPOCHS", "three"), ("WARM_START", "maybe"), ("SEED", "1.5")])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_overrides_reject_unknown_names():
    with pytest.raises(ValueError, match="unknown settings"):
        Settings().with_overrides(num_epoch=2)
    assert Settings().with_overrides(batch_size=4).batch_size == 4
