"""A separate process running the Lambda handler, driven by tests one JSON line at a time.

It stands for one Lambda container: it cold-starts ``handler.app`` from the environment it is given,
prints ``ready``, then answers each request line ``{"method", "path", "body", "headers"}`` on stdin with one
result line ``{"status", "answer", "signals"}`` on stdout, ``signals`` counting what this invocation fired
in this process. A line ``{"relay": {options}}`` runs the relay instead (``handler.relay.run(**options)``)
and answers with its report (``notices``, and ``outbox`` with a topic) and ``signals``.
Everything the handler logs goes to stderr.
"""

import json
import logging
import os
import sys
from collections import Counter


def main() -> None:
    # Keep stdout for results: the handler's logs (Powertools writes to stdout) go to stderr instead.
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if os.environ.get("CHILD_ROOT_LOG_LEVEL"):
        logging.basicConfig(level=os.environ["CHILD_ROOT_LOG_LEVEL"], stream=sys.stderr)

    from athm_core import signals
    from handler import app
    from handler.local import http_api_event, invoke, response_body

    fired: Counter[str] = Counter()
    for name in ("payment_completed", "payment_cancelled", "payment_expired", "refund_sent",
                 "payment_received", "donation_received"):  # fmt: skip
        getattr(signals, name).connect(lambda sender, _name=name, **kwargs: fired.update([_name]), weak=False)

    print("ready", file=results)
    for line in sys.stdin:
        request = json.loads(line)
        fired.clear()
        if "relay" in request:
            from handler import relay

            report = relay.run(**request["relay"])
            print(json.dumps({**report, "signals": fired}), file=results)
            continue
        event = http_api_event(
            request.get("method", "POST"),
            request["path"],
            body=request.get("body", ""),
            headers=request.get("headers"),
        )
        response = invoke(app.lambda_handler, event)
        body = response_body(response)
        answer = json.loads(body) if body.startswith(b"{") else body.decode()
        print(
            json.dumps({"status": response["statusCode"], "answer": answer, "signals": fired}), file=results
        )


if __name__ == "__main__":
    main()
