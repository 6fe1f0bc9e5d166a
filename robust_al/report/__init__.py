"""Reading a run back: status and trust tables."""
from robust_al.report.text import status_text, trust_text

__all__ = ["status_text", "trust_text"]
