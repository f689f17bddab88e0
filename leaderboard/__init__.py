"""Result records, recomputation, ranking and pages (see the leaderboard issue)."""
