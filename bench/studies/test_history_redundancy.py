"""bench.studies.history_redundancy: the share of bytes a cross-wave match model could reach."""

from bench.studies.history_redundancy import coverage


def test_a_repeat_within_the_first_wave_does_not_count_and_a_later_one_does():
    assert coverage(b"xyz" * 100, 4, 30) == 0.9  # all but the first wave
    assert coverage(b"xyz" * 10, 4, 30) == 0.0  # one wave: no history yet
    assert coverage(bytes(range(200)), 8, 50) == 0.0  # nothing repeats


def test_a_window_must_have_ended_before_the_wave_starts():
    block = bytes(range(100, 140))  # 40 distinct bytes
    data = block + bytes(range(40)) + block  # the repeat starts at 80, wave 2 (wave = 40)
    assert coverage(data, 40, 40) == 40 / 120
    assert coverage(data, 40, 100) == 0.0  # the repeat is in wave 0 with its source
