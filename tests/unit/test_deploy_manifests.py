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
    assert set(kinds) == {"PersistentVolumeClaim", "ConfigMap", "Deployment", "Service"}
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


CONFIG_FILES = ("batching_parameters.txt", "monitoring.config")


def test_batching_and_monitoring_files_parse_as_tf_serving_reads_them():
    from serving.batching import read_batching_parameters
    from serving.metrics import DEFAULT_PROMETHEUS_PATH, read_monitoring_config

    options = read_batching_parameters(DEPLOY / "tf-serving" / "batching_parameters.txt")
    assert options.max_batch_size == 32 and options.num_batch_threads == 2
    assert read_monitoring_config(DEPLOY / "tf-serving" / "monitoring.config") == (
        DEFAULT_PROMETHEUS_PATH
    )


def _check_config_flags(args: dict[str, str], mounted_dirs: set[str]) -> None:
    """Batching is on, and both files are read from a mounted folder under their own names."""
    assert args["--enable_batching"] == "true"
    for flag, name in (
        ("--batching_parameters_file", "batching_parameters.txt"),
        ("--monitoring_config_file", "monitoring.config"),
    ):
        directory, _, file_name = args[flag].rpartition("/")
        assert file_name == name and directory in mounted_dirs, (flag, args[flag])


def test_compose_mounts_the_batching_and_monitoring_files():
    compose = yaml.safe_load((DEPLOY / "tf-serving" / "docker-compose.yaml").read_text())
    service = compose["services"]["tf-serving"]
    args = _serving_args(service["command"])
    mounted = set()
    for volume in service["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            assert (DEPLOY / "tf-serving" / source[2:]).is_file(), source
            directory, _, name = target.rpartition("/")
            assert source[2:] == name
            mounted.add(directory)
    _check_config_flags(args, mounted)


def test_kubernetes_config_map_holds_the_same_files():
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "tf-serving.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    config_map = kinds["ConfigMap"]
    for name in CONFIG_FILES:
        assert config_map["data"][name] == (DEPLOY / "tf-serving" / name).read_text()
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounted = {
        m["mountPath"]
        for m in container["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == config_map["metadata"]["name"]
    }
    _check_config_flags(_serving_args(container["args"]), mounted)
    annotations = kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/monitoring/prometheus/metrics"
