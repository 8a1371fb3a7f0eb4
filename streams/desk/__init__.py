"""The review desk: a web application over the evidence ledger, for compliance teams.

`create_app` builds the Starlette application over a `Database` (the ledger's, SQLite
or PostgreSQL); `consentwatch desk serve` runs it with uvicorn. The desk's queries are
in `queries.py` (keyset paging), users, roles, sessions and the login rate limit in
`users.py`.
"""

from __future__ import annotations

from streams.desk.app import DeskConfig, create_app
from streams.desk.db import Database, DatabaseError

__all__ = ["Database", "DatabaseError", "DeskConfig", "create_app"]
