"""What the tests of a built package run in it, the way Lambda runs the webhook function: the migrations,
then one completion posted twice (applied, then a duplicate), without boto3. Each line it prints that
starts with ``RESULT `` is JSON: ``"migrated"``, the two answers, then where ``handler`` and Django were
imported from, with every source file that Python had to compile on the way (none, when the package's
.pyc files are this Python's and are used). Its standard input is the webhook's body."""

BUILT_SECRET = "built-secret-0123456789abcdefghijklmnop"

WEBHOOK = """
import sys
compiled = []
def audit(event, args):  # the compile() of a module's source: the import found no .pyc it could use
    if event == "compile" and isinstance(args[1], str) and args[1].endswith(".py"):
        compiled.append(args[1])
sys.addaudithook(audit)
import json, os
from handler.migrate import lambda_handler as migrate
from handler.local import LocalContext, http_api_event, invoke, response_body
print("RESULT", json.dumps(migrate({}, LocalContext())["status"]))
from handler import app
assert "boto3" not in sys.modules
body = sys.stdin.read()
path = "/webhook/" + os.environ["ATHM_WEBHOOK_SECRET"]
for _ in range(2):
    answer = invoke(app.lambda_handler, http_api_event("POST", path, body=body))
    print("RESULT", json.dumps({"status": answer["statusCode"], "body": json.loads(response_body(answer))}))
where = {"handler": app.__file__, "django": sys.modules["django"].__file__, "compiled": compiled}
print("RESULT", json.dumps(where))
"""
