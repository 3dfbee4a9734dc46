"""template.yaml, checked without AWS: cfn-lint, handlers that exist, and every setting accounted for."""

import json
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, cfn_lint, load_template

TEMPLATE = ROOT / "template.yaml"
LAYER_TEMPLATE = ROOT / "examples" / "receivers_layer" / "template.yaml"


@pytest.mark.parametrize("path", [TEMPLATE, LAYER_TEMPLATE], ids=["template.yaml", "receivers_layer"])
def test_cfn_lint_finds_nothing(path):
    result = cfn_lint(path)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def functions() -> dict[str, dict]:
    resources = load_template(TEMPLATE)["Resources"]
    return {
        name: resource["Properties"]
        for name, resource in resources.items()
        if resource["Type"] == "AWS::Serverless::Function"
    }


def test_every_handler_in_the_template_is_a_callable_in_the_package(child_env):
    handlers = sorted({properties["Handler"] for properties in functions().values()})
    assert handlers == [
        f"handler.{module}.lambda_handler" for module in ("app", "migrate", "reconcile", "relay")
    ]
    check = (
        "import importlib, sys\n"
        "for handler in sys.argv[1:]:\n"
        "    module, name = handler.rsplit('.', 1)\n"
        "    assert callable(getattr(importlib.import_module(module), name)), handler\n"
        "print('ok')\n"
    )
    env = {
        **child_env,
        "ATHM_SNS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:athm-events",
        "ATHM_PUBLIC_TOKEN": "pk_test",
        "ATHM_PRIVATE_TOKEN": "sk_test",
    }
    command = [sys.executable, "-c", check, *handlers]
    result = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# How handler/settings.py reads a variable: os.environ.get("X"), env.get("X"), _list("X"), _flag("X").
_READ = re.compile(r"""(?:environ\.get|env\.get|_list|_flag)\(\s*["']([A-Z0-9_]+)["']""")


def variables_read_by(module: str) -> set[str]:
    return set(_READ.findall((ROOT / "handler" / f"{module}.py").read_text(encoding="utf-8")))


def variables_the_settings_read() -> set[str]:
    return variables_read_by("settings")


def variables_the_template_sets() -> set[str]:
    template = load_template(TEMPLATE)
    names = set(template["Globals"]["Function"]["Environment"]["Variables"])
    for properties in functions().values():
        names |= set(properties.get("Environment", {}).get("Variables", {}))
    return names


def variables_the_docs_document() -> set[str]:
    """The variables in docs/settings.md's table (the README links to it)."""
    settings = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([A-Z0-9_]+)`", settings, flags=re.MULTILINE))


# Lambda sets these in every function.
LAMBDA_RUNTIME = {"AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT"}


def test_every_variable_the_settings_read_is_set_by_the_template_or_documented_as_optional():
    read = variables_the_settings_read() - LAMBDA_RUNTIME
    assert {"DATABASE_URL", "DB_SECRET_ARN", "ATHM_WEBHOOK_SECRET_ARN", "ATHM_SNS_TOPIC_ARN"} <= read
    missing = read - variables_the_template_sets() - variables_the_docs_document()
    assert not missing, (
        f"read by handler/settings.py, set by neither template.yaml nor docs/settings.md: {missing}"
    )


def test_every_variable_the_template_sets_is_read_by_someone():
    # Powertools reads its own POWERTOOLS_* variables, and the Parameters and Secrets extension its own
    # PARAMETERS_SECRETS_EXTENSION_* (handler.secrets_manager reads the port too, before the settings exist).
    read = variables_the_settings_read() | variables_read_by("secrets_manager")
    assert "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT" in read
    unread = variables_the_template_sets() - read
    unknown = {
        name for name in unread if not name.startswith(("POWERTOOLS_", "PARAMETERS_SECRETS_EXTENSION_"))
    }
    assert not unknown, f"template.yaml sets variables nothing reads: {unknown}"


def test_the_functions_wear_what_the_database_needs():
    every = functions()
    assert every["WebhookFunction"]["ReservedConcurrentExecutions"] == {"Ref": "ReservedConcurrency"}
    assert every["WebhookFunction"]["Timeout"] < 30  # API Gateway's HTTP API gives up at 30 s
    template = load_template(TEMPLATE)
    assert template["Globals"]["Function"]["VpcConfig"] == {
        "SubnetIds": {"Ref": "SubnetIds"},
        "SecurityGroupIds": {"Ref": "SecurityGroupIds"},
    }
    # The migrations run before the new code takes traffic or publishes.
    for name in ("WebhookFunction", "RelayFunction"):
        assert template["Resources"][name]["DependsOn"] == "Migrations"
    # No secret in a parameter's value: secrets are referred to by ARN.
    for name in template["Parameters"]:
        assert "Secret" not in name or name.endswith("Arn"), name
    architectures = template["Globals"]["Function"]["Architectures"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert architectures == [re.search(r"^LAMBDA_ARCH \?= (\S+)", makefile, re.MULTILINE).group(1)]


def test_the_secrets_extension_is_opt_in_and_reaches_every_function_that_reads_a_secret():
    template = load_template(TEMPLATE)
    parameter = template["Parameters"]["SecretsExtensionLayerArn"]
    assert parameter["Default"] == ""  # empty: opted out, the secrets are read with boto3
    assert re.fullmatch(
        parameter["AllowedPattern"],
        "arn:aws:lambda:us-east-1:177933569100:layer:AWS-Parameters-and-Secrets-Lambda-Extension-Arm64:12",
    )
    assert re.fullmatch(parameter["AllowedPattern"], "")
    # The layer is built per architecture: the description names the functions' own.
    assert template["Globals"]["Function"]["Architectures"] == ["arm64"]
    assert "Arm64" in parameter["Description"]
    assert template["Conditions"]["HasSecretsExtension"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "SecretsExtensionLayerArn"}, ""]}]
    }
    # Every function reads the database secret (DB_SECRET_ARN is global), so the layer and the port are
    # global, and set only with the parameter; no function replaces them.
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    assert "DB_SECRET_ARN" in variables
    no_value = {"Ref": "AWS::NoValue"}
    assert variables["PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"] == {
        "Fn::If": ["HasSecretsExtension", "2773", no_value]
    }
    assert variables["PARAMETERS_SECRETS_EXTENSION_CACHE_ENABLED"] == {
        "Fn::If": ["HasSecretsExtension", "false", no_value]
    }
    layers = template["Globals"]["Function"]["Layers"]["Fn::Split"][1]["Fn::Join"][1]
    assert layers[0] == {"Ref": "DependenciesLayer"}
    assert {
        "Fn::If": ["HasSecretsExtension", {"Fn::Join": ["", [",", {"Ref": "SecretsExtensionLayerArn"}]]}, ""]
    } in layers
    for name, properties in functions().items():
        assert "Layers" not in properties, name
        own = properties.get("Environment", {}).get("Variables", {})
        assert not {key for key in own if key.startswith("PARAMETERS_SECRETS_")}, name
        reads_a_secret = any("AWSSecretsManagerGetSecretValuePolicy" in p for p in properties["Policies"])
        assert reads_a_secret, name


def test_every_function_in_the_template_has_a_build_target():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"build-(\w+)", makefile))
    resources = load_template(TEMPLATE)["Resources"]
    built = {name for name, resource in resources.items() if resource.get("Metadata", {}).get("BuildMethod")}
    assert built and built <= targets, f"no build-<name> target in the Makefile for {built - targets}"


def test_a_notice_stuck_for_ten_minutes_or_a_silent_relay_raises_an_alarm():
    resources = load_template(TEMPLATE)["Resources"]
    alarm = resources["NoticeAgeAlarm"]["Properties"]
    outbox = resources["OutboxAgeAlarm"]["Properties"]
    assert alarm["MetricName"] == "NoticeOldestPendingAge"  # what handler/relay.py reports, in seconds
    assert (alarm["Statistic"], alarm["Period"], alarm["EvaluationPeriods"]) == ("Maximum", 300, 1)
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 600)
    # The relay reports every minute, topic or not: no data means it is not running.
    assert alarm["TreatMissingData"] == "breaching"
    for key in ("Namespace", "Dimensions", "AlarmActions"):
        assert alarm[key] == outbox[key], key
    relay = resources["RelayFunction"]
    assert "Condition" not in relay  # always created: the receivers need it with or without SNS
    assert relay["Properties"]["Description"] == (
        "Delivers notices the webhook function could not finish, and publishes outbox messages"
    )
    assert relay["Properties"]["Events"]["EveryMinute"]["Properties"]["Schedule"] == "rate(1 minute)"


BUSINESS_ALARMS = {
    "RejectedAlarm": "WebhookRejected",
    "AnomalyAlarm": "WebhookAnomalies",
    "ReceiverFailureAlarm": "ReceiverFailed",
    "PendingVerificationAlarm": "VerificationOldestPendingAge",
    "UnverifiedAlarm": "WebhookUnverifiablePayment",
    "ReconcileRecoveredAlarm": "ReconcileCreated",
    "ReconcileMismatchAlarm": "ReconcileMismatches",
}


def test_the_business_alarms_watch_metrics_the_code_emits_and_are_documented():
    resources = load_template(TEMPLATE)["Resources"]
    code = "\n".join(
        path.read_text() for folder in ("handler", "athm_core") for path in (ROOT / folder).rglob("*.py")
    )
    operations = (ROOT / "docs" / "operations.md").read_text()
    for name, metric in BUSINESS_ALARMS.items():
        alarm = resources[name]["Properties"]
        assert alarm["MetricName"] == metric, name
        assert f'"{metric}"' in code, f"{name} watches {metric}, which nothing emits"
        assert alarm["Namespace"] == {"Ref": "MetricsNamespace"}
        assert f"| `{name}` |" in operations, f"docs/operations.md does not say what to do about {name}"


@pytest.mark.django_db
def test_the_relay_reports_the_metric_the_alarm_watches_in_seconds(settings):
    from handler import relay
    from handler.observability import metrics

    settings.ATHM_SNS_TOPIC_ARN = ""  # the notices are reported with or without a topic
    try:
        relay.run()
        reported = {name: dict(metric) for name, metric in metrics.metric_set.items()}
    finally:
        metrics.clear_metrics()
    assert reported["NoticeOldestPendingAge"]["Unit"] == "Seconds"
    assert reported["NoticeOldestPendingAge"]["Value"] == [0.0]  # nothing waits


# --- the runtime, SnapStart and the alias -----------------------------------------------------------------

RUNTIMES = ["python3.11", "python3.12", "python3.13"]
# What the template's required parameters are given when it is translated; the rest take their defaults.
REQUIRED = {
    "DatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf",
    "SubnetIds": ["subnet-0123456789abcdef0"],
    "SecurityGroupIds": ["sg-0123456789abcdef0"],
}


def translate(**parameters) -> dict:
    """template.yaml as SAM's translator hands it to CloudFormation (what `sam deploy` gets), for these
    parameter values; the code where `sam package` would have put it."""
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    template = load_template(TEMPLATE)
    template["Globals"]["Function"]["CodeUri"] = "s3://bucket/code.zip"
    template["Resources"]["DependenciesLayer"]["Properties"]["ContentUri"] = "s3://bucket/layer.zip"
    translator = Translator(None, Parser(), boto_session=boto3.Session(region_name="us-east-1"))
    return translator.translate(
        template, parameter_values={**REQUIRED, **parameters}, get_managed_policy_map=lambda: {}
    )


def resolve(value, template: dict, parameters: dict):
    """What CloudFormation makes of the parameters and conditions in ``value`` (Ref, Fn::If, Fn::Equals,
    Fn::Not, Fn::And, Fn::Or); other intrinsics are left as they are."""
    values = {
        name: parameters.get(name, spec.get("Default")) for name, spec in template["Parameters"].items()
    }

    def condition(name):
        return walk(template["Conditions"][name])

    def walk(node):
        if isinstance(node, list):
            return [walk(item) for item in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            [(key, argument)] = node.items()
            if key == "Ref" and argument in values:
                return values[argument]
            if key == "Fn::Equals":
                left, right = walk(argument)
                return left == right
            if key == "Fn::Not":
                return not walk(argument[0])
            if key in ("Fn::And", "Fn::Or"):
                results = [walk(item) if isinstance(item, dict) and "Condition" not in item
                           else condition(item["Condition"]) for item in argument]  # fmt: skip
                return all(results) if key == "Fn::And" else any(results)
            if key == "Fn::If":
                name, then, otherwise = argument
                return walk(then if condition(name) else otherwise)
        return {key: walk(item) for key, item in node.items()}

    return walk(value)


def make_dry_run(*arguments: str) -> subprocess.CompletedProcess:
    command = ["make", "--no-print-directory", "-n", *arguments]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("runtime", "newest_glibc", "system"),
    [("python3.11", 26, "al2"), ("python3.12", 34, "al2023"), ("python3.13", 34, "al2023")],
)
def test_one_makefile_variable_picks_the_wheels_the_requirements_and_the_templates_runtime(
    runtime, newest_glibc, system
):
    layer = make_dry_run("build-DependenciesLayer", f"LAMBDA_RUNTIME={runtime}", "ARTIFACTS_DIR=/nonexistent")
    assert layer.returncode == 0, layer.stderr
    assert f"--python-version {runtime.removeprefix('python')} " in layer.stdout
    # The newest manylinux that the runtime's glibc loads comes first, down to manylinux2014 (glibc 2.17).
    platforms = re.findall(r"--platform (\S+)", layer.stdout)
    assert platforms[0] == f"manylinux_2_{newest_glibc}_aarch64"
    assert platforms[-2:] == ["manylinux_2_17_aarch64", "manylinux2014_aarch64"]
    assert len(platforms) == newest_glibc - 17 + 2
    assert f"-r requirements-lambda.txt -r requirements-lambda-{system}.txt" in layer.stdout
    # Compiled by that runtime's Python, recorded at the layer's path in Lambda.
    assert "LAMBDA_PATH=/opt/python" in layer.stdout
    assert f"python{runtime.removeprefix('python')}" in layer.stdout
    package = make_dry_run("build-package", f"LAMBDA_RUNTIME={runtime}")
    assert package.returncode == 0, package.stderr
    assert f"--parameter-overrides Runtime={runtime}" in package.stdout


def test_a_runtime_the_package_is_not_built_for_stops_make():
    result = make_dry_run("build", "LAMBDA_RUNTIME=python3.10")
    assert result.returncode != 0
    assert "LAMBDA_RUNTIME=python3.10 is not one of python3.11 python3.12 python3.13" in result.stderr


def test_the_runtime_is_one_parameter_that_every_function_and_the_layer_follow():
    template = load_template(TEMPLATE)
    parameter = template["Parameters"]["Runtime"]
    assert parameter["AllowedValues"] == RUNTIMES
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert parameter["Default"] == re.search(r"^LAMBDA_RUNTIME \?= (\S+)", makefile, re.MULTILINE).group(1)
    assert template["Globals"]["Function"]["Runtime"] == {"Ref": "Runtime"}
    for name, properties in functions().items():
        assert "Runtime" not in properties, f"{name} has a runtime of its own"
    resources = template["Resources"]
    assert resources["DependenciesLayer"]["Properties"]["CompatibleRuntimes"] == RUNTIMES
    others = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Function"]
    assert others and all(r["Properties"]["Runtime"] == {"Ref": "Runtime"} for r in others)


@pytest.mark.parametrize("snapstart", ["true", "false"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_snapstart_is_on_for_the_webhook_function_where_the_runtime_has_it_unless_turned_off(
    runtime, snapstart
):
    parameters = {"Runtime": runtime, "SnapStart": snapstart}
    translated = translate(**parameters)
    resources = translated["Resources"]
    webhook = resolve(resources["WebhookFunction"]["Properties"], translated, parameters)
    assert webhook["Runtime"] == runtime
    expected = "None" if runtime == "python3.11" or snapstart == "false" else "PublishedVersions"
    assert webhook["SnapStart"] == {"ApplyOn": expected}
    # The configuration's digest changes with it, so that turning it on or off publishes a version.
    digest = resolve(resources["WebhookConfiguration"]["Properties"], translated, parameters)
    assert digest["SnapStart"] == expected
    # The scheduled functions and the migrations do without (template.yaml says why).
    for name in ("RelayFunction", "ReconcileFunction", "MigrateFunction"):
        assert "SnapStart" not in resources[name]["Properties"], name


def test_the_http_api_invokes_the_webhook_functions_alias_and_the_alarms_its_name():
    resources = translate(Runtime="python3.13")["Resources"]
    [alias] = [name for name, r in resources.items() if r["Type"] == "AWS::Lambda::Alias"
               and r["Properties"]["FunctionName"] == {"Ref": "WebhookFunction"}]  # fmt: skip
    [version] = [name for name, r in resources.items() if r["Type"] == "AWS::Lambda::Version"
                 and r["Properties"]["FunctionName"] == {"Ref": "WebhookFunction"}]  # fmt: skip
    assert resources[alias]["Properties"]["Name"] == "live"
    assert resources[alias]["Properties"]["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}
    # A new digest of the configuration is a new description, which publishes a new version.
    assert resources[version]["Properties"]["Description"] == {
        "Fn::Sub": "configuration ${WebhookConfiguration.Digest}"
    }
    [api] = [r for r in resources.values() if r["Type"] == "AWS::ApiGatewayV2::Api"]
    paths = api["Properties"]["Body"]["paths"]
    assert set(paths) == {"/webhook/{secret}", "/health"}
    for path, methods in paths.items():
        for method in methods.values():
            uri = method["x-amazon-apigateway-integration"]["uri"]["Fn::Sub"]
            assert f"${{{alias}}}/invocations" in uri, path
    permissions = [r for r in resources.values() if r["Type"] == "AWS::Lambda::Permission"
                   and r["Properties"]["Principal"] == "apigateway.amazonaws.com"]  # fmt: skip
    assert len(permissions) == 2
    assert all(p["Properties"]["FunctionName"] == {"Ref": alias} for p in permissions)
    # Lambda's metrics by FunctionName count every version and alias of the function.
    for name in ("WebhookErrorsAlarm", "WebhookThrottlesAlarm"):
        dimensions = resources[name]["Properties"]["Dimensions"]
        assert dimensions == [{"Name": "FunctionName", "Value": {"Ref": "WebhookFunction"}}], name


def _references(node) -> set[str]:
    """The parameters and resources that ``node`` refers to."""
    if isinstance(node, list):
        return set().union(*map(_references, node)) if node else set()
    if not isinstance(node, dict):
        return set()
    found = set()
    for key, value in node.items():
        if key == "Ref" and isinstance(value, str) and not value.startswith("AWS::"):
            found.add(value)
        elif key == "Fn::GetAtt":
            found.add(value[0] if isinstance(value, list) else value.split(".")[0])
        elif key == "Fn::Sub":
            text = value if isinstance(value, str) else value[0]
            found |= {name.split(".")[0] for name in re.findall(r"\$\{([^!}][^}]*)\}", text)}
            found -= {name for name in found if name.startswith("AWS::")}
        else:
            found |= _references(value)
    return found


def test_the_configuration_digest_covers_everything_a_deploy_can_change_in_the_webhook_function():
    template = load_template(TEMPLATE)
    digest = template["Resources"]["WebhookConfiguration"]["Properties"]
    globals_ = template["Globals"]["Function"]
    webhook = functions()["WebhookFunction"]
    assert digest["Runtime"] == globals_["Runtime"]
    assert digest["Layers"] == globals_["Layers"]
    assert digest["VpcConfig"] == globals_["VpcConfig"]
    assert digest["Environment"] == {
        **globals_["Environment"]["Variables"],
        **webhook["Environment"]["Variables"],
    }
    # Whatever else of the function as deployed depends on a parameter or a resource is the function's
    # own (its role, its log group, its concurrency, its code: SAM publishes a version for new code).
    resources = translate(Runtime="python3.13")["Resources"]
    deployed = resources["WebhookFunction"]["Properties"]
    own = {"Role", "LoggingConfig", "ReservedConcurrentExecutions", "Code"}
    covered = _references(resources["WebhookConfiguration"]["Properties"])
    for key, value in deployed.items():
        if key not in own:
            assert _references(value) <= covered, f"WebhookFunction's {key} is not in WebhookConfiguration"


def test_the_configuration_digest_function_answers_cloudformation_with_a_digest_of_its_properties():
    import http.server
    import threading

    code = load_template(TEMPLATE)["Resources"]["ConfigurationDigestFunction"]["Properties"]["Code"][
        "ZipFile"
    ]
    assert len(code) < 4096  # CloudFormation's limit for ZipFile
    namespace: dict = {}
    exec(compile(code, "index.py", "exec"), namespace)
    answers: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            answers.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:

        def digest(properties: dict, request_type: str = "Update") -> str:
            event = {
                "RequestType": request_type,
                "ResponseURL": f"http://127.0.0.1:{server.server_port}/response",
                "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/athm/1",
                "RequestId": "request-1",
                "LogicalResourceId": "WebhookConfiguration",
                "PhysicalResourceId": "WebhookConfiguration",
                "ResourceProperties": {"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:d",
                                       **properties},
            }  # fmt: skip
            namespace["handler"](event, None)
            answer = answers[-1]
            assert answer["Status"] == "SUCCESS"
            assert answer["PhysicalResourceId"] == "WebhookConfiguration"  # an update replaces nothing
            return answer["Data"]["Digest"]

        first = {"Runtime": "python3.13", "Environment": {"ATHM_RECEIVERS": "", "DATABASE_URL": "x"}}
        same = {"Environment": {"DATABASE_URL": "x", "ATHM_RECEIVERS": ""}, "Runtime": "python3.13"}
        other = {
            "Runtime": "python3.13",
            "Environment": {"ATHM_RECEIVERS": "shop.receivers", "DATABASE_URL": "x"},
        }
        assert digest(first) == digest(same)
        assert digest(first) != digest(other)
        assert len(digest(first)) == 20
        digest(first, "Delete")  # a delete is answered too
    finally:
        server.shutdown()


@pytest.mark.parametrize("path", [TEMPLATE, ROOT / "examples" / "receivers_layer" / "template.yaml"])
def test_each_layer_declares_the_architecture_it_is_built_for(path):
    """Without BuildArchitecture, sam build takes a layer for x86_64 and warns that it is not compatible."""
    layers = [
        r for r in load_template(path)["Resources"].values() if r["Type"] == "AWS::Serverless::LayerVersion"
    ]
    assert layers
    for layer in layers:
        assert [layer["Metadata"]["BuildArchitecture"]] == layer["Properties"]["CompatibleArchitectures"]


def test_the_makefile_turns_sam_telemetry_off():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^export SAM_CLI_TELEMETRY := 0$", makefile, re.MULTILINE)
