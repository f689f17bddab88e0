"""Transfer runs (issue 14): one row per point of a transfer study (model, source set, target
set, strategy, k, seed), with its metrics recomputed by the board.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "transfer_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitter", sa.String(200), nullable=False),
        sa.Column("task", sa.String(100), nullable=False),
        sa.Column("task_version", sa.String(50), nullable=False),
        sa.Column("study", sa.String(200), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_key", sa.String(64), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("strategy", sa.String(100), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("domain", sa.String(10), nullable=False),
        sa.Column("split", sa.String(100), nullable=False),
        sa.Column("target_name", sa.String(200), nullable=False),
        sa.Column("source_name", sa.String(200), nullable=False),
        sa.Column("source_content_hash", sa.String(64), nullable=False),
        sa.Column("source_path", sa.String(500), nullable=False),
        sa.Column("target_data_name", sa.String(200), nullable=False),
        sa.Column("target_content_hash", sa.String(64), nullable=False),
        sa.Column("target_path", sa.String(500), nullable=False),
        sa.Column("data_content_hash", sa.String(64), nullable=False),
        sa.Column("n_objects", sa.Integer(), nullable=False),
        sa.Column("main_score", sa.String(100), nullable=False),
        sa.Column("main_value", sa.Float(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("predictions_sha256", sa.String(64), nullable=False),
        sa.Column("predictions_path", sa.String(500), nullable=False),
        sa.Column("study_path", sa.String(500), nullable=False),
        sa.Column("folder", sa.String(500), nullable=False),
        sa.Column("wall_seconds", sa.Float(), nullable=True),
        sa.Column("sim2obs_version", sa.String(50), nullable=False),
        sa.Column("git_commit", sa.String(64), nullable=True),
        sa.UniqueConstraint("task", "study", "target_name", "strategy", "k", "seed", "data_content_hash",
                            "predictions_sha256", name="uq_transfer_runs_point"),
    )
    op.create_index("ix_transfer_runs_task", "transfer_runs", ["task"])
    op.create_table(
        "transfer_metrics",
        sa.Column("transfer_run_id", sa.Integer(), sa.ForeignKey("transfer_runs.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("transfer_metrics")
    op.drop_index("ix_transfer_runs_task", table_name="transfer_runs")
    op.drop_table("transfer_runs")
