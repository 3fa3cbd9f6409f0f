"""Gatehouse control plane: settings, URLs, ASGI, policy models and the snapshot compiler."""

from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
