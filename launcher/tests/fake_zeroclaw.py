#!/usr/bin/env python3
"""Stand-ins for the launcher's tests: `gateway --host H --port P` plays ZeroClaw's gateway (the
rendered config.toml's paired token hash gates /api/health and /webhook; a webhook message is
stored in workspace/memory/brain.db), `store DIR PORT` plays presigned S3 URLs (GET/PUT/DELETE
of files in DIR)."""
import hashlib, json, os, sqlite3, sys, tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def gateway(host, port):
    cfg_dir = os.environ["ZEROCLAW_CONFIG_DIR"]
    with open(os.path.join(cfg_dir, "config.toml"), "rb") as f:
        cfg = tomllib.load(f)
    paired = cfg["gateway"]["paired_tokens"]
    brain = os.path.join(cfg_dir, "workspace", "memory", "brain.db")

    class H(BaseHTTPRequestHandler):
        def reply(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def paired(self):
            auth = self.headers.get("authorization", "")
            token = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
            return hashlib.sha256(token.encode()).hexdigest() in paired

        def do_GET(self):
            if self.path == "/health":
                self.reply(200, {"status": "ok"})
            elif self.path == "/api/health" and self.paired():
                self.reply(200, {"status": "ok", "paired": True, "model": cfg["default_model"]})
            else:
                self.reply(401, {"error": "unauthorized"})

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.path != "/webhook" or not self.paired():
                return self.reply(401 if self.path == "/webhook" else 404, {"error": "no"})
            msg = json.loads(body)["message"]
            os.makedirs(os.path.dirname(brain), exist_ok=True)
            db = sqlite3.connect(brain)
            db.execute("CREATE TABLE IF NOT EXISTS memories (content TEXT NOT NULL)")
            db.execute("INSERT INTO memories (content) VALUES (?)", (msg,))
            db.commit()
            rows = [r[0] for r in db.execute("SELECT content FROM memories ORDER BY rowid")]
            db.close()
            self.reply(200, {"response": " | ".join(rows)})

        def log_message(self, *a):
            pass

    ThreadingHTTPServer((host, int(port)), H).serve_forever()


def store(root, port):
    class H(BaseHTTPRequestHandler):
        def file(self):
            return os.path.join(root, os.path.basename(self.path.split("?")[0]))

        def done(self, status, data=b""):
            self.send_response(status)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            try:
                with open(self.file(), "rb") as f:
                    self.done(200, f.read())
            except FileNotFoundError:
                self.done(404)

        def do_PUT(self):
            data = self.rfile.read(int(self.headers.get("content-length", "0")))
            with open(self.file(), "wb") as f:
                f.write(data)
            self.done(200)

        def do_DELETE(self):
            try:
                os.remove(self.file())
            except FileNotFoundError:
                pass
            self.done(204)

        def log_message(self, *a):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(port)), H).serve_forever()


if __name__ == "__main__":
    if sys.argv[1] == "gateway":
        args = dict(zip(sys.argv[2::2], sys.argv[3::2]))
        gateway(args["--host"], args["--port"])
    else:
        store(sys.argv[2], sys.argv[3])
