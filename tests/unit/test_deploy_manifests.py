"""The TF Serving deployment files parse and agree with the pipeline's serving layout.

They cannot run here (no Docker engine, no Kubernetes); these checks catch drift.
"""

import yaml

from components.versioned_pusher.layout import MODELS_CONFIG_FILE
from pipeline.config import PipelineConfig
from tests.conftest import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"


def _serving_args(args):
    return {a.split("=", 1)[0]: a.split("=", 1)[1] for a in args}


def test_compose_serves_the_models_config_the_pusher_writes():
    compose = yaml.safe_load((DEPLOY / "tf-serving" / "docker-compose.yaml").read_text())
    service = compose["services"]["tf-serving"]
    args = _serving_args(service["command"])
    base = PipelineConfig().models_config_base_path
    assert args["--model_config_file"] == f"{base}/{MODELS_CONFIG_FILE}"
    assert any(v.endswith(f":{base}:ro") for v in service["volumes"])
    assert args["--enable_model_warmup"] == "true"
    assert all(p.startswith("127.0.0.1:") for p in service["ports"])


def test_kubernetes_deployment_and_service_match():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "tf-serving.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"PersistentVolumeClaim", "Deployment", "Service"}
    container = kinds["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    args = _serving_args(container["args"])
    base = PipelineConfig().models_config_base_path
    assert args["--model_config_file"] == f"{base}/{MODELS_CONFIG_FILE}"
    assert container["volumeMounts"][0]["mountPath"] == base
    readiness = container["readinessProbe"]["httpGet"]["path"]
    assert readiness == f"/v1/models/{PipelineConfig().model_name}"
    service_ports = {p["name"]: p["port"] for p in kinds["Service"]["spec"]["ports"]}
    assert service_ports == {"grpc": 8500, "rest": 8501}
    assert (
        kinds["Service"]["spec"]["selector"]
        == kinds["Deployment"]["spec"]["selector"]["matchLabels"]
    )
