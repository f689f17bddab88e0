"""Paired errors between transfer strategies (issue 14): each transfer run keeps its main score on
every bootstrap resample of the test objects (``main_replicates``, recomputed by the board), so the
difference of two strategies scored on the same target test set and resamples gets a paired error.
Nullable: runs recorded before this revision have none (their differences get no paired error).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("transfer_runs") as batch:
        batch.add_column(sa.Column("main_replicates", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transfer_runs") as batch:
        batch.drop_column("main_replicates")
