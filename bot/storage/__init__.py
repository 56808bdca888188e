"""Persistence: SQLAlchemy 2 async models, engine setup and small repositories."""
