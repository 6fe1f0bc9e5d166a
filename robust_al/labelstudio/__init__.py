"""Label Studio integration (server in its own venv, REST client, annotator accounts, webhooks)."""
from __future__ import annotations

EXTRA_HINT = 'Label Studio support needs the labelstudio extra: pip install "robust-al[labelstudio]"'


class MissingExtra(ModuleNotFoundError):
    """label-studio-sdk / httpx are not installed (the ``labelstudio`` extra)."""


def require_labelstudio() -> None:
    """Raise :class:`MissingExtra` with a one-line install hint when the ``labelstudio`` extra is missing."""
    try:
        import httpx  # noqa: F401
        import label_studio_sdk  # noqa: F401
    except ModuleNotFoundError as e:
        raise MissingExtra(f"{EXTRA_HINT} ({e.name} is missing)") from None
