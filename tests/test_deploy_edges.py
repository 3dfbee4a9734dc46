"""Deploying as a merchant's engineer would (found by a review): another runtime on a stack that exists, a
migration function that cannot start and the stack's rollback or deletion, the configuration digest's
answer lost. Everything runs locally: the Makefile's own recipe
for the built template (with a stand-in for ``sam build``), SAM CLI's own parameter handling for ``sam
deploy`` against a stand-in CloudFormation client, the migration function in a child process, and the
template as written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, load_template
from tests.test_migrate import ResponseUrl, invoke

TEMPLATE = ROOT / "template.yaml"


# --- the built template's Runtime and `sam deploy` on a stack that exists ---------------------------------


def build_template(tmp_path: Path, runtime: str) -> str:
    """The template `make build LAMBDA_RUNTIME=<runtime>` leaves for `sam deploy`, made by the Makefile's own
    build-package recipe; a stand-in for `sam build` copies template.yaml where sam build would write it
    (the recipe's rewrite of the template only touches what sam build leaves as it was)."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "sam").write_text(
        "#!/bin/sh\n"
        "while [ $# -gt 0 ]; do\n"
        '  case "$1" in --build-dir) dir=$2; shift;; --template-file) tpl=$2; shift;; esac; shift\n'
        "done\n"
        'mkdir -p "$dir" && cp "$tpl" "$dir/template.yaml"\n'
    )
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    for script in bin_dir.iterdir():
        script.chmod(0o755)
    build_dir = tmp_path / "build"
    result = subprocess.run(
        ["make", "--no-print-directory", "build-package", f"VENV={tmp_path / 'venv'}",
         f"LAMBDA_RUNTIME={runtime}", f"BUILD_DIR={build_dir}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return (build_dir / "template.yaml").read_text(encoding="utf-8")


class ExistingStack:
    """Stands in for CloudFormation's client as `sam deploy` uses it, for a stack that exists with these
    parameter values from its last deploy; records the change set it is asked for."""

    def __init__(self, previous: dict[str, str]) -> None:
        self.previous = previous
        self.change_set: dict = {}

    def describe_stacks(self, StackName):
        return {"Stacks": [{"StackName": StackName, "StackStatus": "UPDATE_COMPLETE"}]}

    def get_template_summary(self, StackName):
        return {"Parameters": [{"ParameterKey": key} for key in self.previous]}

    def create_change_set(self, **kwargs):
        self.change_set = kwargs
        return {"Id": "arn:aws:cloudformation:us-east-1:123456789012:changeSet/samcli-deploy/1"}


def runtime_cloudformation_deploys(built_text: str, stack: ExistingStack) -> tuple[str, list[str] | None]:
    """What `sam deploy` (no --parameter-overrides, no Runtime in samconfig.toml) has CloudFormation deploy
    the functions on, and the values the template allows for it (None: no parameter decides it)."""
    from samcli.commands.deploy.deploy_context import DeployContext
    from samcli.lib.deploy.deployer import Deployer
    from samcli.yamlhelper import yaml_parse

    built = yaml_parse(built_text)
    parameters = DeployContext.merge_parameters(built, {})
    Deployer(stack).create_changeset(
        stack_name="athm", cfn_template=built_text, parameter_values=parameters,
        capabilities=["CAPABILITY_IAM"], role_arn=None, notification_arns=None, s3_uploader=None, tags=[],
    )  # fmt: skip
    runtime = built["Globals"]["Function"]["Runtime"]
    if runtime != {"Ref": "Runtime"}:
        return runtime, None
    sent = {p["ParameterKey"]: p for p in stack.change_set["Parameters"]}
    spec = built["Parameters"]["Runtime"]
    if "Runtime" not in sent:
        value = spec["Default"]
    elif sent["Runtime"].get("UsePreviousValue"):
        value = stack.previous["Runtime"]
    else:
        value = sent["Runtime"]["ParameterValue"]
    return value, spec.get("AllowedValues")


@pytest.mark.parametrize(
    ("built_for", "deployed_before"),
    [("python3.13", "python3.11"), ("python3.11", "python3.13")],
    ids=["moving-off-python3.11", "going-back-to-python3.11"],
)
def test_make_build_for_another_runtime_then_sam_deploy_deploys_that_runtime_on_an_existing_stack(
    tmp_path, built_for, deployed_before
):
    # docs/deploy.md, "Choosing one: build and deploy agree": `make build LAMBDA_RUNTIME=... ; sam deploy`.
    # On a stack that exists, `sam deploy` sends every parameter it is not given as UsePreviousValue, so
    # the Runtime of the last deploy reaches CloudFormation, which the built template's AllowedValues
    # refuse ("this package was built for X: deploy it with Runtime=X"), though nobody asked for a runtime.
    built_text = build_template(tmp_path, built_for)
    previous = {
        "Runtime": deployed_before,
        "DatabaseSecretArn": "arn:aws:secretsmanager:us-east-1:1:secret:db",
    }
    runtime, allowed = runtime_cloudformation_deploys(built_text, ExistingStack(previous))
    assert allowed is None or runtime in allowed, (
        f"CloudFormation refuses the deploy: Runtime={runtime} (the stack's previous value) is not in "
        f"{allowed}, the runtime the package was built for"
    )
    assert runtime == built_for


# --- the migrations custom resource, when the migration function cannot start ----------------------------


@pytest.fixture
def response_url():
    url = ResponseUrl()
    yield url
    url.server.shutdown()


def test_a_migration_function_that_cannot_start_does_not_block_the_stacks_delete_or_rollback(
    child_env, tmp_path, response_url
):
    # CloudFormation sends Delete to a custom resource whose Create FAILED, when it rolls the stack back,
    # and on `sam delete`. A first deploy with a receiver module that cannot be imported (a typo in
    # ReceiverModules, a receivers layer built for another Python than the Runtime), or a stack deleted
    # after its database secret, cannot start the migration function: its Delete must still succeed
    # (Delete changes nothing), or the stack ends in ROLLBACK_FAILED / DELETE_FAILED and can only be
    # removed with --retain-resources Migrations.
    env = {
        **child_env,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'never.sqlite3'}",
        "ATHM_RECEIVERS": "shop.no_such_receivers",
        "AWS_LAMBDA_FUNCTION_NAME": "athm-migrate",
    }
    event = {**response_url.event("Delete"), "PhysicalResourceId": "athm-migrations"}
    invoke(event, env)
    [answer] = response_url.received
    assert answer["Status"] == "SUCCESS", answer["Reason"]
    assert answer["PhysicalResourceId"] == "athm-migrations"


# --- the configuration digest's answer can be lost --------------------------------------------------------


def test_a_lost_answer_from_the_configuration_digest_does_not_hang_the_deploy_for_an_hour():
    # The inline handler raises when its PUT to the pre-signed URL fails (Lambda tries the event twice
    # more); if those fail too, CloudFormation waits for the custom resource's default timeout, an hour,
    # before it fails and rolls back. ServiceTimeout (1 to 3600 s) bounds that wait: the digest takes well
    # under a second.
    properties = load_template(TEMPLATE)["Resources"]["WebhookConfiguration"]["Properties"]
    timeout = properties.get("ServiceTimeout")
    assert timeout is not None and int(timeout) <= 300, "WebhookConfiguration has no ServiceTimeout"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([os.path.abspath(__file__), "-q"]))
