"""Bootstrap errors on the board (issue 15): each metric row holds its 1σ bootstrap error and each
run the resamples it was computed on (``n_bootstrap`` and their seed) with the main score on
every resample, so differences between runs scored on the same resamples get a paired error;
transfer runs record the resamples behind their (now recomputed) errors. All recomputed by the
board; nullable (runs recorded before this revision have none).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metrics") as batch:
        batch.add_column(sa.Column("error", sa.Float(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("n_bootstrap", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("bootstrap_seed", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("main_replicates", sa.JSON(), nullable=True))
    with op.batch_alter_table("transfer_runs") as batch:
        batch.add_column(sa.Column("n_bootstrap", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("bootstrap_seed", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("transfer_runs") as batch:
        batch.drop_column("bootstrap_seed")
        batch.drop_column("n_bootstrap")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("main_replicates")
        batch.drop_column("bootstrap_seed")
        batch.drop_column("n_bootstrap")
    with op.batch_alter_table("metrics") as batch:
        batch.drop_column("error")
