"""The authors' single-seed protocol is one override away: ``+protocol=authors`` (configs/protocol/)."""

from __future__ import annotations

from helpers import compose_config


def test_authors_protocol_sets_seed_42_and_deterministic() -> None:
    default = compose_config(["experiment=table3", "optimizer=adamx"])
    assert (default.seed, default.trainer.deterministic) == (0, False)  # our sweeps: seeds 0-4, fast kernels
    authors = compose_config(["experiment=table3", "optimizer=adamx", "+protocol=authors"])
    assert (authors.seed, authors.trainer.deterministic) == (42, True)
    # nothing else moves: the table's settings are the same under both protocols
    for key in ("model", "dataset", "optimizer", "schedule", "experiment_name"):
        assert authors[key] == default[key], key
    assert authors.trainer.epochs == default.trainer.epochs
    assert compose_config(["+protocol=authors", "seed=3"]).seed == 3  # the command line still wins
