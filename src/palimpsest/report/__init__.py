"""Reports of stored experiments: a terminal table, CSV files and one self-contained HTML page.

    from palimpsest import ResultsDB
    from palimpsest.report import summarize, render_table, write_html_report
    db = ResultsDB("palimpsest-results")
    render_table(summarize(db, exp_id))
    write_html_report(db, exp_id, "report.html")
"""
from .csv import export_csv
from .html import write_html_report
from .table import render_table, summarize, table_text
from .unlearning import (export_ledger_csv, render_unlearning_table, summarize_unlearning, unlearning_table_text,
                         write_unlearning_report)

__all__ = ["export_csv", "render_table", "summarize", "table_text", "write_html_report", "export_ledger_csv",
           "render_unlearning_table", "summarize_unlearning", "unlearning_table_text", "write_unlearning_report"]
