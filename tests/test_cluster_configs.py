"""cluster/ cannot rot silently: the launcher configs validate against the JSON schema inside the
installed Ray wheel, the KubeRay manifests use only the CRDs' field names, every config describes the
same node groups and places the stages on them, and image tags and Ray versions agree with setup.cfg
and the Ray the project is tested with."""
import configparser
import json
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER = REPO / "cluster"
LAUNCHER = {"aws": CLUSTER / "aws.yaml", "gcp": CLUSTER / "gcp.yaml"}
KUBERAY = {"raycluster": CLUSTER / "kuberay" / "raycluster.yaml", "rayjob": CLUSTER / "kuberay" / "rayjob.yaml"}
GROUPS = {"head", "cpu", "gpu", "gpu-train"}
GPU_GROUPS = {"gpu", "gpu-train"}
SPOT_GROUPS = {"cpu", "gpu"}  # gpu-train stays on demand: a lost 8-GPU node costs a restart


def load(path):
    return yaml.safe_load(path.read_text())


def setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def ray_version():
    import ray

    return ray.__version__


# --- Ray cluster launcher ------------------------------------------------------------------------

def ray_schema():
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


@pytest.mark.parametrize("cloud", sorted(LAUNCHER))
def test_launcher_configs_validate_against_the_schema_in_the_ray_wheel(cloud):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load(LAUNCHER[cloud])
    jsonschema.validate(config, ray_schema())
    validate_config(prepare_config(config))  # what `ray up` does: the provider's defaults filled in, then checked
    # The check bites: a misspelt key is refused.
    with pytest.raises(jsonschema.ValidationError, match="min_worker"):
        broken = load(LAUNCHER[cloud])
        broken["available_node_types"]["cpu"]["min_worker"] = 1
        jsonschema.validate(broken, ray_schema())


@pytest.mark.parametrize("cloud", sorted(LAUNCHER))
def test_launcher_node_groups_cpu_and_spot_for_crawling_gpu_for_models_with_bounds(cloud):
    config = load(LAUNCHER[cloud])
    types = config["available_node_types"]
    assert set(types) == GROUPS and config["head_node_type"] == "head"
    assert types["head"]["resources"]["CPU"] == 0  # drivers only: no crawl or training task on the head
    for name in GROUPS - {"head"}:
        node = types[name]
        assert node["labels"] == {"node-pool": name}
        assert 0 <= node["min_workers"] <= node["max_workers"]
        has_gpu = node["resources"].get("GPU", 0) > 0
        assert has_gpu == (name in GPU_GROUPS), name
        image = node.get("docker", {}).get("worker_image", config["docker"]["image"])
        assert image.endswith("-cpu") != has_gpu, (name, image)  # CUDA images exactly where the GPUs are
        node_config = json.dumps(node["node_config"])
        spot = "spot" in node_config.lower()
        assert spot == (name in SPOT_GROUPS), name
    assert sum(types[n]["max_workers"] for n in GROUPS - {"head"}) <= config["max_workers"]
    # Token authentication on every node, from the token file mounted there.
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        assert "RAY_AUTH_MODE=token" in " ".join(config[key])
    assert list(config["file_mounts"].values()) == ["~/.ray/auth_token"]


# --- KubeRay -------------------------------------------------------------------------------------
# JSON field names of the KubeRay CRDs, from the Go types they are generated from:
# ray-project/kuberay ray-operator/apis/ray/v1/raycluster_types.go (RayClusterSpec, HeadGroupSpec,
# WorkerGroupSpec, AutoscalerOptions) and rayjob_types.go (RayJobSpec, SubmitterConfig), KubeRay 1.x, API
# ray.io/v1; Kubernetes core/v1 for the pod templates (PodTemplateSpec, PodSpec, Container, Toleration,
# EnvVar, ResourceRequirements, VolumeMount, Volume, ContainerPort; only the fields these manifests may use).
# Required (no omitempty in the Go types): marked with a "!".
CRD = {
    "RayCluster": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "spec": "RayClusterSpec"},
    "RayJob": {"apiVersion": "str", "kind": "str", "metadata": "ObjectMeta", "spec": "RayJobSpec"},
    "ObjectMeta": {"name": "str", "namespace": "str", "labels": "map", "annotations": "map"},
    "RayClusterSpec": {"!headGroupSpec": "HeadGroupSpec", "workerGroupSpecs": ["WorkerGroupSpec"],
                       "rayVersion": "str", "enableInTreeAutoscaling": "bool", "autoscalerOptions": "AutoscalerOptions",
                       "headServiceAnnotations": "map", "suspend": "bool"},
    "HeadGroupSpec": {"serviceType": "str", "headService": "map", "enableIngress": "bool",
                      "!rayStartParams": "strmap", "!template": "PodTemplateSpec"},
    "WorkerGroupSpec": {"!groupName": "str", "replicas": "int", "!minReplicas": "int", "!maxReplicas": "int",
                        "numOfHosts": "int", "!rayStartParams": "strmap", "!template": "PodTemplateSpec",
                        "scaleStrategy": "map"},
    "AutoscalerOptions": {"resources": "ResourceRequirements", "image": "str", "imagePullPolicy": "str",
                          "env": ["EnvVar"], "envFrom": "list", "volumeMounts": ["VolumeMount"],
                          "securityContext": "map", "idleTimeoutSeconds": "int",
                          "upscalingMode": ("Default", "Aggressive", "Conservative")},
    "RayJobSpec": {"activeDeadlineSeconds": "int", "backoffLimit": "int", "rayClusterSpec": "RayClusterSpec",
                   "submitterPodTemplate": "PodTemplateSpec", "metadata": "strmap", "clusterSelector": "strmap",
                   "submitterConfig": "map", "managedBy": "str", "deletionStrategy": "map", "entrypoint": "str",
                   "runtimeEnvYAML": "str", "jobId": "str",
                   "submissionMode": ("K8sJobMode", "HTTPMode", "InteractiveMode"),
                   "entrypointResources": "str", "entrypointNumCpus": "num", "entrypointNumGpus": "num",
                   "ttlSecondsAfterFinished": "int", "shutdownAfterJobFinishes": "bool", "suspend": "bool",
                   "schedule": "str"},
    "PodTemplateSpec": {"metadata": "ObjectMeta", "spec": "PodSpec"},
    "PodSpec": {"!containers": ["Container"], "volumes": ["Volume"], "tolerations": ["Toleration"],
                "nodeSelector": "strmap", "affinity": "map", "restartPolicy": ("Always", "OnFailure", "Never"),
                "serviceAccountName": "str", "imagePullSecrets": "list", "priorityClassName": "str"},
    "Container": {"!name": "str", "image": "str", "command": "list", "args": "list", "env": ["EnvVar"],
                  "envFrom": "list", "ports": ["ContainerPort"], "resources": "ResourceRequirements",
                  "volumeMounts": ["VolumeMount"], "imagePullPolicy": "str", "securityContext": "map",
                  "lifecycle": "map"},
    "Toleration": {"key": "str", "operator": ("Exists", "Equal"), "value": "str",
                   "effect": ("NoSchedule", "PreferNoSchedule", "NoExecute"), "tolerationSeconds": "int"},
    "EnvVar": {"!name": "str", "value": "str", "valueFrom": "map"},
    "ResourceRequirements": {"requests": "map", "limits": "map", "claims": "list"},
    "VolumeMount": {"!name": "str", "!mountPath": "str", "readOnly": "bool", "subPath": "str"},
    "Volume": {"!name": "str", "persistentVolumeClaim": "map", "emptyDir": "map", "secret": "map",
               "configMap": "map", "hostPath": "map"},
    "ContainerPort": {"!containerPort": "int", "name": "str", "protocol": "str", "hostPort": "int"},
}
SCALARS = {"str": str, "bool": bool, "int": int, "num": (int, float), "map": dict, "list": list}


def crd_errors(value, kind: str, where: str) -> list[str]:
    """Every key of `value` not in the CRD type `kind`, every missing required key, every wrong type."""
    if isinstance(kind, list):
        if not isinstance(value, list):
            return [f"{where}: a list expected"]
        return [e for i, item in enumerate(value) for e in crd_errors(item, kind[0], f"{where}[{i}]")]
    if isinstance(kind, tuple):
        return [] if value in kind else [f"{where}: {value!r} is not one of {kind}"]
    if kind == "strmap":
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        return [] if ok else [f"{where}: a map of strings expected (KubeRay passes them to `ray start`)"]
    if kind in SCALARS:
        ok = isinstance(value, SCALARS[kind]) and not (kind in ("int", "num") and isinstance(value, bool))
        return [] if ok else [f"{where}: {kind} expected, got {type(value).__name__}"]
    if not isinstance(value, dict):
        return [f"{where}: an object ({kind}) expected"]
    fields = {k.lstrip("!"): t for k, t in CRD[kind].items()}
    errors = [f"{where}.{k}: not a field of {kind}" for k in value if k not in fields]
    errors += [f"{where}.{k[1:]}: required by {kind}" for k in CRD[kind] if k.startswith("!") and k[1:] not in value]
    for k, v in value.items():
        if k in fields:
            errors += crd_errors(v, fields[k], f"{where}.{k}")
    return errors


@pytest.mark.parametrize("name", sorted(KUBERAY))
def test_kuberay_manifests_use_only_the_crds_field_names(name):
    manifest = load(KUBERAY[name])
    assert manifest["apiVersion"] == "ray.io/v1"
    assert crd_errors(manifest, manifest["kind"], manifest["kind"]) == []
    # The check bites: a field of another API version, a misspelt one, a number where a string goes.
    broken = load(KUBERAY[name])
    spec = broken["spec"].get("rayClusterSpec", broken["spec"])
    spec["workerGroupSpecs"][0]["minWorkers"] = 1  # the launcher's word, not KubeRay's
    spec["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0
    errors = crd_errors(broken, broken["kind"], broken["kind"])
    assert any("minWorkers: not a field of WorkerGroupSpec" in e for e in errors)
    assert any("rayStartParams: a map of strings expected" in e for e in errors)


def kuberay_groups(spec: dict) -> dict:
    groups = {"head": spec["headGroupSpec"]}
    groups.update({g["groupName"]: g for g in spec["workerGroupSpecs"]})
    return groups


def test_kuberay_node_groups_gpu_limits_tolerations_and_the_launchers_resources():
    cluster = load(KUBERAY["raycluster"])
    job = load(KUBERAY["rayjob"])
    assert job["spec"]["rayClusterSpec"] == cluster["spec"]  # the RayJob's cluster is the RayCluster
    groups = kuberay_groups(cluster["spec"])
    assert set(groups) == GROUPS
    assert groups["head"]["rayStartParams"]["num-cpus"] == "0"
    launcher = load(LAUNCHER["aws"])["available_node_types"]
    for name, group in groups.items():
        params = group["rayStartParams"]
        assert params["labels"] == f"node-pool={name}"
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        gpus = container["resources"]["limits"].get("nvidia.com/gpu", 0)
        assert gpus == launcher[name]["resources"].get("GPU", 0), name
        tolerated = {t["key"] for t in pod.get("tolerations", [])}
        assert ("nvidia.com/gpu" in tolerated) == (name in GPU_GROUPS), name
        assert ("cloud.google.com/gke-spot" in tolerated) == (name in SPOT_GROUPS), name
        custom = {k: v for k, v in launcher[name]["resources"].items() if k not in ("CPU", "GPU")}
        if name != "head":
            # rayStartParams.resources is `ray start --resources`' JSON, quoted for the shell
            assert json.loads(json.loads(params["resources"])) == custom, name
            assert 0 == group["minReplicas"] <= group["maxReplicas"] == launcher[name]["max_workers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    assert cluster["spec"]["enableInTreeAutoscaling"] is True


def test_the_rayjob_shuts_its_cluster_down_and_carries_the_runtime_env_file():
    job = load(KUBERAY["rayjob"])["spec"]
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] > 0
    runtime_env = yaml.safe_load(job["runtimeEnvYAML"])
    assert runtime_env["env_vars"] == load(CLUSTER / "runtime-env.yaml")["env_vars"]
    assert job["entrypoint"].startswith("glide ")
    assert "-c /home/ray/glide/cluster/pipeline.yaml" in job["entrypoint"]  # where the Dockerfile puts it
    submitter_env = {e["name"] for e in job["submitterPodTemplate"]["spec"]["containers"][0]["env"]}
    assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= submitter_env


# --- the placement the configs serve, and the versions -------------------------------------------

def test_the_cluster_pipeline_config_places_each_stage_on_a_group_that_offers_it():
    from pipeline.config import load_config

    placement = load_config(CLUSTER / "pipeline.yaml").ray.placement
    nodes = {name: node["resources"] for name, node in load(LAUNCHER["gcp"])["available_node_types"].items()}
    wanted = {"ingest": {"cpu"}, "embed": {"gpu"}, "filter": {"gpu"}, "train": {"gpu-train"}}
    for stage, groups in wanted.items():
        resources = getattr(placement, stage).resources
        offering = {name for name, offered in nodes.items()
                    if all(offered.get(r, 0) >= n for r, n in resources.items())}
        assert offering == groups, (stage, resources, offering)


def all_images() -> list[str]:
    texts = [p.read_text() for p in [*LAUNCHER.values(), *KUBERAY.values()]]
    return re.findall(r"image:\s*(\S+)", "\n".join(texts))


def test_image_tags_and_ray_versions_agree_with_setup_cfg_and_the_tested_ray():
    from packaging.specifiers import SpecifierSet

    version = setup_cfg()["metadata"]["version"]
    ray = ray_version()
    ray_requirement = next(r for r in setup_cfg()["options"]["install_requires"].splitlines()
                           if r.strip().startswith("ray["))
    assert ray in SpecifierSet(ray_requirement.split("]", 1)[1].strip())
    images = all_images()
    assert len(images) >= 8
    for image in images:
        assert re.fullmatch(rf"[\w.\-/]+/glide:{re.escape(version)}-ray{re.escape(ray)}-(cpu|cu\d+)", image), image
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert re.search(rf"^ARG RAY_VERSION={re.escape(ray)}$", dockerfile, re.M)
    python_tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    assert re.search(rf"^ARG PYTHON_TAG={python_tag}$", dockerfile, re.M)
    assert "FROM rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-${VARIANT}" in dockerfile
    cuda_tags = set(re.findall(r"-(cu\d+)$", "\n".join(images), re.M))
    assert cuda_tags and cuda_tags <= set(re.findall(r"VARIANT=(cu\d+)", dockerfile))  # the variants it documents
    for name in KUBERAY:
        manifest = load(KUBERAY[name])
        spec = manifest["spec"].get("rayClusterSpec", manifest["spec"])
        assert spec["rayVersion"] == ray
