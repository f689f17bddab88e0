"""The leaderboard: every evaluated run recorded with its provenance, metrics recomputed by the
suite from stored predictions, entries ranked per task, and a static HTML page.

    from sim2obs.leaderboard import Leaderboard
    board = Leaderboard()                      # SQLite in $SIM2OBS_RESULTS (or any SQLAlchemy url=)
    board.record(task, "preds.h5", RunInfo(model_name="mynet", seed=0))
    print(to_text(rank(aggregate(board.runs("metallicity"))), ["rmse", "nmad"]))
    build_page(board, "sim2obs_results/leaderboard")

Transfer studies (``sim2obs transfer``): ``board.record_transfer(study_folder)`` checks and
records every row (:mod:`sim2obs.leaderboard.transfer`); the transfer board and its page section:
:mod:`sim2obs.leaderboard.transfer_board`.

Command line: ``sim2obs leaderboard show | submit | record-transfer | page | verify`` (``--help`` on each).
"""
from sim2obs.leaderboard.board import MIN_SEEDS_RANKED, Leaderboard, RunInfo
from sim2obs.leaderboard.page import adopt_plots, build_page
from sim2obs.leaderboard.ranking import Entry, aggregate, rank, to_csv, to_markdown, to_text
from sim2obs.leaderboard.submission import read_predictions, write_csv

__all__ = ["Leaderboard", "RunInfo", "MIN_SEEDS_RANKED", "adopt_plots", "build_page", "Entry", "aggregate", "rank", "to_text",
           "to_markdown", "to_csv", "read_predictions", "write_csv"]
