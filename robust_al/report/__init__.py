"""Reading a run back: status and trust tables; the HTML report of evaluation results."""
from robust_al.report.html import write_report
from robust_al.report.text import status_text, trust_table, trust_text

__all__ = ["status_text", "trust_table", "trust_text", "write_report"]
