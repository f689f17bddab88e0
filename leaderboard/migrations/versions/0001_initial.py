"""Initial leaderboard schema: runs and their metrics.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitter", sa.String(200), nullable=False),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("task_version", sa.String(50), nullable=False),
        sa.Column("split", sa.String(100), nullable=False),
        sa.Column("data_name", sa.String(200), nullable=False),
        sa.Column("data_content_hash", sa.String(64), nullable=False),
        sa.Column("data_kind", sa.String(10), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=True),
        sa.Column("model_target", sa.String(300), nullable=True),
        sa.Column("n_parameters", sa.Integer(), nullable=True),
        sa.Column("config_hash", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=True),
        sa.Column("main_score", sa.String(100), nullable=False),
        sa.Column("main_value", sa.Float(), nullable=False),
        sa.Column("predictions_sha256", sa.String(64), nullable=False),
        sa.Column("stored_sha256", sa.String(64), nullable=False),
        sa.Column("predictions_path", sa.String(500), nullable=False),
        sa.Column("train_seconds", sa.Float(), nullable=True),
        sa.Column("eval_seconds", sa.Float(), nullable=True),
        sa.Column("hardware", sa.JSON(), nullable=False),
        sa.Column("package_versions", sa.JSON(), nullable=False),
        sa.Column("sim2obs_version", sa.String(50), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.Column("source", sa.String(20), nullable=False),
        sa.UniqueConstraint("task", "split", "data_content_hash", "predictions_sha256", name="uq_runs_predictions"),
    )
    op.create_index("ix_runs_task", "runs", ["task"])
    op.create_index("ix_runs_model_name", "runs", ["model_name"])
    op.create_table(
        "metrics",
        sa.Column("run_id", sa.Integer(), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("metrics")
    op.drop_index("ix_runs_model_name", table_name="runs")
    op.drop_index("ix_runs_task", table_name="runs")
    op.drop_table("runs")
