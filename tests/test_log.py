"""The one logging channel: console on rank 0 only (info to stdout, warnings to stderr), a file per rank."""
from __future__ import annotations

import logging

import pytest

from distgan.log import add_file, get_logger, remove_file, setup_console


@pytest.fixture(autouse=True)
def _clean_distgan_logger():
    root = get_logger()
    before, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in before:
            root.removeHandler(h)
    root.setLevel(level)


def test_console_tags_component_and_splits_streams(capsys):
    setup_console(rank=0)
    setup_console(rank=0)  # idempotent: one handler, each line once
    get_logger("launch").info("2 local ranks")
    get_logger("sweep").warning("cell 3 failed")
    out, err = capsys.readouterr()
    assert out == "[launch] 2 local ranks\n"
    assert err == "[sweep] warning: cell 3 failed\n"


def test_console_is_silent_on_other_ranks(capsys):
    setup_console(rank=1)
    get_logger("train").info("only in the rank's file")
    get_logger("train").warning("also only in the file")
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_file_keeps_every_rank_record_and_records_still_propagate(tmp_path, caplog):
    setup_console(rank=1)
    handler = add_file(tmp_path / "logs" / "rank1.log")
    with caplog.at_level(logging.INFO, logger="distgan"):
        get_logger("metrics").info("step 10 fid=12.5")
    remove_file(handler)
    get_logger("metrics").info("after the run: not in the file")
    text = (tmp_path / "logs" / "rank1.log").read_text()
    assert "distgan.metrics INFO step 10 fid=12.5" in text
    assert "after the run" not in text
    assert "step 10 fid=12.5" in [r.getMessage() for r in caplog.records]
