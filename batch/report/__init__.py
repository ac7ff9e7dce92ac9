"""The run report: one self-contained HTML file (plots embedded as SVG, no scripts, nothing
fetched) that shows a person what a run did, next to the popularity list and earlier runs.

``topx run`` writes it into the run directory as ``report.html`` (uploaded with the run on an
``s3://`` work directory); ``topx report --run R`` writes it again, ``topx report --runs N``
writes the trend of the last N published runs alone. Plots need matplotlib, the ``report``
extra, imported only when a report is drawn.
"""

from batch.report.build import REPORT_NAME, require_plotting, write_report, write_trend_report

__all__ = ["REPORT_NAME", "require_plotting", "write_report", "write_trend_report"]
