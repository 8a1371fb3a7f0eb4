"""The HTTP front of the local test TSA (deploy/tsa/tsa.sh starts it): RFC 3161 over HTTP.

POST with Content-Type application/timestamp-query -> `openssl ts -reply` with DIR/tsa.cnf
-> 200 application/timestamp-reply. Anything else is 4xx. Standard library only; for tests
and the demo, never for a deployment.

    python3 server.py --dir DIR --port N [--section tsa|tsa_expired]
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

MAX_QUERY = 64 << 10


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--section", default="tsa_default")
    args = parser.parse_args()
    config = args.dir / "tsa.cnf"

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            kind = self.headers.get("Content-Type", "")
            length = int(self.headers.get("Content-Length") or 0)
            if kind != "application/timestamp-query" or not 0 < length <= MAX_QUERY:
                self.send_error(415 if length else 400, "want application/timestamp-query")
                return
            query = self.rfile.read(length)
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                queryfile, replyfile = Path(tmp, "q.tsq"), Path(tmp, "r.tsr")
                queryfile.write_bytes(query)
                done = subprocess.run(
                    ["openssl", "ts", "-reply", "-config", str(config), "-section",
                     args.section, "-queryfile", str(queryfile), "-out", str(replyfile)],
                    capture_output=True, check=False, timeout=30)
                if done.returncode != 0 or not replyfile.exists():
                    self.send_error(400, "openssl ts -reply refused the query")
                    return
                reply = replyfile.read_bytes()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *values: object) -> None:  # noqa: A002
            return  # no request log: the queries are digests, but keep the test output quiet

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.serve_forever()


if __name__ == "__main__":
    main()
