"""Application models used as `DBJOBS_MODELS` in tests: types with aliases on every engine."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base: detect-migrations accepts it as well as a MetaData."""


class Author(Base):
    __tablename__ = "author"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(120), unique=True)
    active: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true())
    joined: Mapped[object] = mapped_column(sa.DateTime(timezone=True), server_default=sa.func.now())
    profile: Mapped[object] = mapped_column(sa.JSON, nullable=True)
    score: Mapped[object] = mapped_column(sa.Numeric(10, 2), server_default="0", nullable=True)
    __table_args__ = (sa.CheckConstraint("score >= 0 AND score < 1000000", name="ck_author_score"),)


class Post(Base):
    __tablename__ = "post"
    id: Mapped[int] = mapped_column(sa.BigInteger, primary_key=True)
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("author.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(sa.String(200), server_default="untitled")
    body: Mapped[str] = mapped_column(sa.Text, nullable=True)
    created: Mapped[object] = mapped_column(sa.DateTime, nullable=True)
    __table_args__ = (sa.UniqueConstraint("author_id", "title"), sa.Index("ix_post_created", "created"))


class Tag(Base):
    __tablename__ = "tag"
    __table_args__ = {"comment": "labels for posts"}
    id: Mapped[int] = mapped_column(sa.Integer, sa.Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40), comment="shown in the UI")
    weight: Mapped[float] = mapped_column(sa.Float, nullable=True)
