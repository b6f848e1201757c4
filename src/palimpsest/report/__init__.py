"""Reports of stored experiments: terminal tables, CSV files and one self-contained HTML page, for
every experiment kind (the kind names its tables and figures; report/page.py renders them).

    from palimpsest import ResultsDB
    from palimpsest.report import render_summary, write_report, export
    db = ResultsDB("palimpsest-results")
    render_summary(db, exp_id)
    write_report(db, exp_id, "report.html")
"""
from .csv import export_csv
from . import memory  # noqa: F401  (registers the memory parts)
from .html import write_html_report
from .learn_setup import resolved_settings
from .page import export, render_summary, write_report
from . import recurring  # noqa: F401  (registers the recurring streams' parts)
from .table import render_table, summarize, table_text
from . import lifecycle as _lifecycle  # noqa: F401  (registers the lifecycle parts)
from .unlearning import (export_ledger_csv, render_unlearning_table, summarize_unlearning, unlearning_table_text,
                         write_unlearning_report)

__all__ = ["export", "export_csv", "render_summary", "render_table", "resolved_settings", "summarize", "table_text", "write_html_report",
           "write_report", "export_ledger_csv", "render_unlearning_table", "summarize_unlearning",
           "unlearning_table_text", "write_unlearning_report"]
