"""`consentwatch export`: a signed, self-verifying evidence bundle from the ledger.

`writer` selects the findings and proves them against a fresh checkpoint; `summary`
writes the CSV, `report` the HTML (with `timeline`'s SVG). The layout is in
`streams.evidence.bundle`.
"""

from streams.evidence.export.writer import ExportQuery, ExportResult, export_bundle

__all__ = ["ExportQuery", "ExportResult", "export_bundle"]
