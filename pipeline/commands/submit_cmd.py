"""`glide submit [OPTIONS] -- COMMAND ...`: run any glide command on a Ray cluster as a Ray job.

The command is checked here first (an unknown command or a missing argument exits 2 before anything is
uploaded), then submitted through the Ray Jobs API with this checkout as its working dir
(cluster/jobs.py); its logs stream here and the exit code is the job's: 0 succeeded, 2 the command's
bad input, 1 any other failure.
"""
from __future__ import annotations

import argparse
import sys

# Commands that talk to the Jobs API themselves: submitting them would only nest jobs.
NOT_SUBMITTABLE = ("submit", "jobs")


def add_address_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--address", default=None, metavar="URL",
                        help="the cluster's Ray Jobs API, e.g. http://HEAD:8265 (default: $RAY_API_SERVER_ADDRESS, "
                             "else $RAY_ADDRESS, else a Ray cluster started on this machine)")


def register(subparsers, common) -> None:
    p = subparsers.add_parser(
        "submit", parents=[common], help="run a glide command on a Ray cluster (Ray Jobs API)",
        usage="glide submit [OPTIONS] -- COMMAND [ARGS...]",
        description="Submit `glide COMMAND ARGS` to a Ray cluster as a Ray job: this checkout is uploaded as "
                    "the job's working dir (without data/, checkpoints/, runs/, demo-output/, .venv; see "
                    "cluster/runtime-env.yaml), the command runs on the cluster and its logs stream here. "
                    "Exit code: 0 when the job succeeded, 2 when the command reported bad input, 1 otherwise. "
                    "Data paths in the command must be visible to every node (s3://, gs://, a shared "
                    "filesystem). Token authentication: RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or "
                    "RAY_AUTH_TOKEN_PATH, as Ray's own CLI.",
    )
    add_address_option(p)
    p.add_argument("--num-cpus", type=float, default=None, metavar="N",
                   help="CPUs reserved for the command's driver (default: none; Ray runs it on the head node)")
    p.add_argument("--num-gpus", type=float, default=None, metavar="G", help="GPUs reserved for the driver")
    p.add_argument("--memory", default=None, metavar="SIZE", help="memory reserved for the driver, e.g. 4GiB")
    p.add_argument("--resources", default=None, metavar="NAME=N,...",
                   help="custom resources reserved for the driver (NAME=N[,NAME=N] or a JSON object)")
    p.add_argument("--node-labels", default=None, metavar="KEY=VALUE,...",
                   help="node labels the driver's node must have (KEY=VALUE[,KEY=VALUE] or a JSON object)")
    p.add_argument("--deps", choices=[d.value for d in _deps()], default="image",
                   help="image (default): the cluster's image has the dependencies (cluster/Dockerfile); "
                        "pip: install setup.cfg's install_requires into the job's runtime environment on "
                        "every node (slow; for clusters built from a bare Ray image)")
    p.add_argument("--working-dir", default=None, metavar="DIR",
                   help="folder uploaded as the job's working dir (default: this project checkout; another "
                        "folder gets the project's packages beside it)")
    p.add_argument("--runtime-env", default=None, metavar="FILE",
                   help="YAML/JSON runtime environment merged over cluster/runtime-env.yaml")
    p.add_argument("--submission-id", default=None, metavar="ID", help="the job's id (default: glide-COMMAND-RANDOM)")
    p.add_argument("--no-wait", action="store_true", help="print the job id and return once it is submitted")
    p.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- COMMAND ARGS", help="the glide command to run")
    p.set_defaults(func=run)


def _deps():
    from cluster.jobs import Deps

    return list(Deps)


def check_command(argv: list[str]) -> list[str]:
    """The glide command after `--`, parsed here as the cluster will parse it (argparse exits 2 on error)."""
    from pipeline.cli import build_parser
    from shards import UserError

    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UserError("glide submit: give the glide command to run after --, e.g. "
                        "glide submit -- ingest s3://bucket/urls.parquet -o s3://bucket/dataset")
    if argv[0] in NOT_SUBMITTABLE:
        raise UserError(f"glide submit: '{argv[0]}' talks to the Jobs API itself; run it here instead")
    build_parser().parse_args(argv)
    return argv


def run(args: argparse.Namespace) -> int:
    from cluster import jobs

    argv = check_command(args.argv)
    jobs.quiet_ray_client(args.debug)
    resources = jobs.EntrypointResources(
        num_cpus=args.num_cpus, num_gpus=args.num_gpus,
        memory=jobs.parse_memory(args.memory) if args.memory else None,
        resources=jobs.parse_mapping(args.resources, "--resources", number=True) if args.resources else {},
        label_selector=jobs.parse_mapping(args.node_labels, "--node-labels", number=False) if args.node_labels else {},
    )
    runtime_env = jobs.job_runtime_env(deps=jobs.Deps(args.deps), working_dir=args.working_dir,
                                       extra_file=args.runtime_env)
    client = jobs.connect(args.address or args.ray_address)
    job_id = jobs.submit(client, argv, runtime_env, resources, args.submission_id)
    print(f"glide submit: job {job_id} submitted to {client.get_address()}", file=sys.stderr, flush=True)
    if args.no_wait:
        print(job_id)
        print(f"glide submit: follow it with `glide jobs logs {job_id} --follow`", file=sys.stderr)
        return 0
    try:
        info = jobs.follow(client, job_id, sys.stdout)
    except KeyboardInterrupt:
        print(f"\nglide submit: job {job_id} keeps running on the cluster; `glide jobs logs {job_id} --follow` "
              f"follows it, `glide jobs stop {job_id}` stops it", file=sys.stderr)
        raise
    print(f"glide submit: {jobs.describe(info)}", file=sys.stderr)
    return jobs.exit_code(info)
