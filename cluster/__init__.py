"""Ray cluster launcher and KubeRay definitions, runtime env, job submission helpers."""
