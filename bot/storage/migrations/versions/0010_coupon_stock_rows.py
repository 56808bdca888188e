"""coupon stock as code rows: generated batches get their codes up front, no hot issued counter

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02

Issuing claims an `available` code row instead of counting up `coupon_batches.issued_count`
(one row every claimer of a batch had to lock in turn). Existing generated batches get the
rest of their stock drawn as available rows here, and the counter goes.
"""

from __future__ import annotations

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# The alphabet of bot/offers/codes.py, repeated so this revision never changes with the code.
ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def _code() -> str:
    value = secrets.randbits(50)
    return "".join(ALPHABET[(value >> (i * 5)) & 31] for i in range(10))


def upgrade() -> None:
    bind = op.get_bind()
    batches = bind.execute(
        sa.text("SELECT id, stock - issued_count FROM coupon_batches WHERE code_kind = 'generated' AND NOT closed"
                " AND stock > issued_count")
    ).all()
    available = sa.text("SELECT count(*) FROM coupon_codes WHERE batch_id = :b AND status = 'available'")
    for batch_id, missing in batches:
        # Drawn in chunks; a code drawn twice is skipped by the unique index and drawn again.
        while (have := bind.execute(available, {"b": batch_id}).scalar_one()) < missing:
            fresh = [_code() for _ in range(min(10_000, missing - have))]
            if bind.dialect.name == "postgresql":
                bind.execute(
                    sa.text("INSERT INTO coupon_codes (batch_id, code, status) SELECT :b, code, 'available'"
                            " FROM unnest(CAST(:codes AS TEXT[])) AS code ON CONFLICT (code) DO NOTHING"),
                    {"b": batch_id, "codes": fresh},
                )
            else:
                bind.execute(
                    sa.text("INSERT OR IGNORE INTO coupon_codes (batch_id, code, status) VALUES (:b, :code, 'available')"),
                    [{"b": batch_id, "code": code} for code in fresh],
                )
    # A plain ALTER (SQLite >= 3.35 has DROP COLUMN): batch mode would copy coupon_batches and drop
    # the old table, whose ON DELETE CASCADE would take every code and holding with it.
    op.execute("ALTER TABLE coupon_batches DROP COLUMN issued_count")
    # Every issue updates a code row: one index fewer to maintain, and a cause lookup can no
    # longer be planned as a scan of the whole batch (uq_coupon_codes_cause leads with batch_id).
    op.drop_index("ix_coupon_codes_batch_status", table_name="coupon_codes")
    op.create_index(
        "ix_coupon_codes_available", "coupon_codes", ["batch_id", "id"],
        postgresql_where=sa.text("status = 'available'"), sqlite_where=sa.text("status = 'available'"),
    )


def downgrade() -> None:
    op.drop_index("ix_coupon_codes_available", table_name="coupon_codes")
    op.create_index("ix_coupon_codes_batch_status", "coupon_codes", ["batch_id", "status"])
    op.add_column("coupon_batches", sa.Column("issued_count", sa.Integer(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE coupon_batches SET issued_count = (SELECT count(*) FROM coupon_codes"
        " WHERE coupon_codes.batch_id = coupon_batches.id AND coupon_codes.status <> 'available')"
    )
    op.execute(
        "DELETE FROM coupon_codes WHERE status = 'available' AND batch_id IN"
        " (SELECT id FROM coupon_batches WHERE code_kind = 'generated')"
    )
