"""What the tests of a built package run in it, the way Lambda runs the webhook function: the migrations,
then one completion posted twice (applied, then a duplicate), without boto3. Each line it prints that
starts with ``RESULT `` is JSON: ``"migrated"``, the two answers, then where ``handler`` and Django were
imported from. Its standard input is the webhook's body."""

BUILT_SECRET = "built-secret-0123456789abcdefghijklmnop"

WEBHOOK = """
import json, os, sys
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
print("RESULT", json.dumps({"handler": app.__file__, "django": sys.modules["django"].__file__}))
"""
