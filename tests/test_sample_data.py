from fruits.sample_data import make_sample
from tests.conftest import SAMPLE


def test_data_sample_is_exactly_what_the_generator_makes(tmp_path):
    made = {p.relative_to(tmp_path): p.read_bytes() for p in make_sample(tmp_path)}
    committed = {p.relative_to(SAMPLE): p.read_bytes() for p in SAMPLE.rglob("*.jpg")}
    assert len(made) == 36
    assert made.keys() == committed.keys()
    assert all(made[name] == committed[name] for name in made)
    assert sum(len(b) for b in made.values()) < 1_000_000
